"""SQL, transactions and the schema. Never sees HTTP."""
