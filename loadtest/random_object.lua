-- wrk script: every request GETs one object picked at random from a list of paths.
-- Usage: wrk -s random_object.lua URL -- PATHS_FILE   (one request path per line, e.g. /titles/1/720p/seg_0.m4s)
-- Each wrk thread has its own Lua state: setup() numbers the threads so each seeds its own generator,
-- and init() pre-formats every request once, so request() costs one table lookup.

local next_id = 0

function setup(thread)
   next_id = next_id + 1
   thread:set("thread_id", next_id)
end

local requests = {}

function init(args)
   local file = args[1]
   if file == nil then
      error("random_object.lua needs the paths file: wrk -s random_object.lua URL -- PATHS_FILE")
   end
   for line in io.lines(file) do
      if line ~= "" then
         requests[#requests + 1] = wrk.format("GET", line)
      end
   end
   if #requests == 0 then
      error("no paths in " .. file)
   end
   math.randomseed(os.time() * 1000 + (thread_id or 0))
end

function request()
   return requests[math.random(#requests)]
end
