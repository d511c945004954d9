-- delete: persistence/tasks.py, as compiled for psycopg
-- constants SQLAlchemy binds: task_count_1=1
WITH deleted AS
(DELETE FROM tasks WHERE tasks.user_id = %(user_id)s::VARCHAR AND tasks.id = %(id)s::BIGINT RETURNING tasks.id),
uncount AS
(UPDATE users SET task_count=(users.task_count - %(task_count_1)s::INTEGER) WHERE users.id = %(user_id)s::VARCHAR AND (EXISTS (SELECT deleted.id
FROM deleted)))
 SELECT deleted.id
FROM deleted
