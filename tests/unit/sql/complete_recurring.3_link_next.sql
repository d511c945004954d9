-- complete_recurring.3_link_next: persistence/tasks.py, as compiled for psycopg
UPDATE tasks SET next_id=%(next_id)s::BIGINT WHERE tasks.user_id = %(user_id)s::VARCHAR AND tasks.id = %(id)s::BIGINT AND tasks.next_id IS NULL RETURNING tasks.id
