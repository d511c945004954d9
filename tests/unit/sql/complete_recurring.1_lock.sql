-- complete_recurring.1_lock: persistence/tasks.py, as compiled for psycopg
SELECT tasks.completed, tasks.recurrence, tasks.next_id, (SELECT following.id
FROM tasks AS following
WHERE following.user_id = tasks.user_id AND following.id = tasks.next_id) AS next_existing
FROM tasks
WHERE tasks.user_id = %(user_id)s::VARCHAR AND tasks.id = %(id)s::BIGINT FOR UPDATE OF tasks
