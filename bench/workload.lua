-- The realistic mix, one random user (and that user's own token) per request:
--   50% GET /api/tasks?limit=50      20% GET /api/tasks/{id}      15% POST /api/tasks
--   10% PATCH /api/tasks/{id}/complete (empty body: toggle)        5% PATCH /api/tasks/{id} (title)
-- Usage: wrk -s workload.lua URL -- DATA_FILE, where DATA_FILE (written by bench/) returns
-- { users = { { token = "...", ids = { ... } }, ... } } with each user's seeded task ids.
local here = string.match(debug.getinfo(1, "S").source, "^@(.*/)") or "./"
dofile(here .. "report.lua")

local users = {}
local counter = 0
local priorities = { "low", "medium", "high", "urgent" }

function init(args)
   local data = dofile(args[1])
   for _, user in ipairs(data.users) do
      local auth = "Bearer " .. user.token
      table.insert(users, {
         ids = user.ids,
         read = { ["Authorization"] = auth },
         write = { ["Authorization"] = auth, ["Content-Type"] = "application/json" },
      })
   end
   math.randomseed(os.time() * 1000 + (thread_number or 0) * 7919)
end

function request()
   counter = counter + 1
   local user = users[math.random(#users)]
   local roll = math.random(100)
   if roll <= 50 then
      return wrk.format("GET", "/api/tasks?limit=50", user.read)
   end
   local id = user.ids[math.random(#user.ids)]
   if roll <= 70 then
      return wrk.format("GET", "/api/tasks/" .. id, user.read)
   elseif roll <= 85 then
      local body = string.format(
         '{"title":"Benchmark task %d-%d","description":"Created under load","priority":"%s","tags":["bench","t%d"]}',
         thread_number or 0, counter, priorities[counter % 4 + 1], counter % 7)
      return wrk.format("POST", "/api/tasks", user.write, body)
   elseif roll <= 95 then
      return wrk.format("PATCH", "/api/tasks/" .. id .. "/complete", user.write, "")
   else
      return wrk.format("PATCH", "/api/tasks/" .. id, user.write,
         string.format('{"title":"Renamed %d-%d"}', thread_number or 0, counter))
   end
end
