-- complete_recurring.2_next_occurrence: persistence/tasks.py, as compiled for psycopg
-- constants SQLAlchemy binds: occurrence_1=1, param_1=1, task_count_1=1
WITH counted AS
(INSERT INTO users (id, email, name, task_count) VALUES (%(user_id)s::VARCHAR, %(email)s::VARCHAR, %(name)s::VARCHAR, %(param_1)s::INTEGER) ON CONFLICT (id) DO UPDATE SET task_count = (users.task_count + %(task_count_1)s::INTEGER) WHERE users.task_count < %(max_tasks)s::INTEGER RETURNING users.id)
 INSERT INTO tasks (user_id, title, description, priority, tags, tag_keys, recurrence, time_zone, due_date, remind_at, occurrence) SELECT counted.id, tasks.title, tasks.description, tasks.priority, tasks.tags, tasks.tag_keys, tasks.recurrence, tasks.time_zone, CAST(%(due_date)s AS TIMESTAMP WITH TIME ZONE) AS anon_1, CAST(%(remind_at)s AS TIMESTAMP WITH TIME ZONE) AS anon_2, tasks.occurrence + %(occurrence_1)s::INTEGER AS anon_3
FROM counted, tasks
WHERE tasks.user_id = %(user_id)s::VARCHAR AND tasks.id = %(id)s::BIGINT RETURNING tasks.id
