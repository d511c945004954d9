-- create_with_idempotency_key.1_claim: persistence/tasks.py, as compiled for psycopg
-- constants SQLAlchemy binds: param_1=None
WITH expired AS
(DELETE FROM idempotency_keys WHERE idempotency_keys.user_id = %(user_id)s::VARCHAR AND idempotency_keys.key != %(key)s::VARCHAR AND idempotency_keys.created_at <= now() - interval '24 hours')
 INSERT INTO idempotency_keys (user_id, key, request_hash) VALUES (%(user_id)s::VARCHAR, %(key)s::VARCHAR, %(request_hash)s::VARCHAR) ON CONFLICT (user_id, key) DO UPDATE SET request_hash = %(request_hash)s::VARCHAR, response = %(param_1)s::JSONB, created_at = now() WHERE idempotency_keys.created_at <= now() - interval '24 hours' RETURNING idempotency_keys.key
