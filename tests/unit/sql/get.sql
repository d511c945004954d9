-- get: persistence/tasks.py, as compiled for psycopg
SELECT tasks.user_id, tasks.id, tasks.title, tasks.description, tasks.completed, tasks.priority, tasks.tags, tasks.due_date, tasks.version, tasks.created_at, tasks.updated_at, tasks.recurrence, tasks.time_zone, tasks.remind_at
FROM tasks
WHERE tasks.user_id = %(user_id)s::VARCHAR AND tasks.id = %(id)s::BIGINT
