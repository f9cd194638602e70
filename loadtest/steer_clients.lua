-- wrk script for loadtest.bench_control: every request GETs a path as a given client, named in a header.
-- Usage: wrk -s steer_clients.lua URL -- REQUESTS_FILE HEADER   (a line: "PATH CLIENT_ADDRESS")
-- The control plane trusts HEADER (its steering.client_ip_header) for the client's address, so one wrk
-- on loopback plays many clients. Each thread pre-formats every request in init() and walks them in order
-- from its own offset, so request() costs one table lookup.

local next_id = 0

function setup(thread)
   next_id = next_id + 1
   thread:set("thread_id", next_id)
end

local requests = {}
local i = 0

function init(args)
   local file, header = args[1], args[2]
   if file == nil or header == nil then
      error("steer_clients.lua needs: wrk -s steer_clients.lua URL -- REQUESTS_FILE HEADER")
   end
   for line in io.lines(file) do
      local path, client = line:match("^(%S+)%s+(%S+)$")
      if path ~= nil then
         requests[#requests + 1] = wrk.format("GET", path, {[header] = client})
      end
   end
   if #requests == 0 then
      error("no requests in " .. file)
   end
   i = ((thread_id or 0) * 997) % #requests
end

function request()
   i = i % #requests + 1
   return requests[i]
end
