-- create_with_idempotency_key.3_replay: persistence/tasks.py, as compiled for psycopg
SELECT idempotency_keys.request_hash, idempotency_keys.response
FROM idempotency_keys
WHERE idempotency_keys.user_id = %(user_id)s::VARCHAR AND idempotency_keys.key = %(key)s::VARCHAR
