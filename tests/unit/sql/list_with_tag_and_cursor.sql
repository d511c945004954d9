-- list_with_tag_and_cursor: persistence/tasks.py, as compiled for psycopg
-- parameters: after=datetime.datetime(2026, 12, 1, 9, 0, tzinfo=datetime.timezone.utc), after_id=41, completed=False, limit=50, tag_0='work', user_id='alice'
SELECT tasks.user_id, tasks.id, tasks.title, tasks.description, tasks.completed, tasks.priority, tasks.tags, tasks.due_date, tasks.version, tasks.created_at, tasks.updated_at, tasks.recurrence, tasks.time_zone, tasks.remind_at
FROM tasks
WHERE tasks.user_id = %(user_id)s::VARCHAR AND tasks.completed = %(completed)s AND (EXISTS (SELECT *
FROM task_tags
WHERE task_tags.user_id = tasks.user_id AND task_tags.tag = %(tag_0)s::VARCHAR AND task_tags.task_id = tasks.id)) AND (tasks.created_at, tasks.id) < (%(after)s, %(after_id)s) ORDER BY tasks.created_at DESC, tasks.id DESC
 LIMIT %(limit)s
