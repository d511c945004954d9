-- One fixed request (the URL and -H headers given to wrk), reported like workload.lua.
local here = string.match(debug.getinfo(1, "S").source, "^@(.*/)") or "./"
dofile(here .. "report.lua")
