-- wrk script: POST {"petId": …} with a token; each thread walks its own share of an id list,
-- so no two requests name the same pet. Prints machine-readable lines prefixed "BENCH".
-- usage: wrk -s post_json.lua URL -- TOKEN ID_FILE THREADS

local threads = {}
counter = 0
exhausted = 0

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  local token, id_file, nthreads = args[1], args[2], tonumber(args[3])
  ids = {}
  local index = 0
  for line in io.lines(id_file) do
    if index % nthreads == tid then table.insert(ids, line) end
    index = index + 1
  end
  wrk.method = "POST"
  wrk.headers["Authorization"] = "Token " .. token
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  counter = counter + 1
  local id = ids[counter]
  if id == nil then  -- out of fresh pets: repeat one, the server answers 409 (a failure)
    exhausted = 1
    id = ids[1]
  end
  return wrk.format(nil, nil, nil, '{"petId":"' .. id .. '"}')
end

function done(summary, latency, requests)
  local used, ran_out = 0, 0
  for _, thread in ipairs(threads) do
    used = used + thread:get("counter")
    ran_out = ran_out + thread:get("exhausted")
  end
  local e = summary.errors
  io.write(string.format(
    "BENCH summary requests=%d duration_us=%d status=%d connect=%d read=%d write=%d timeout=%d used=%d exhausted=%d\n",
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout, used, ran_out))
  -- The latency distribution as 2,000 quantiles (wrk keeps no raw samples for scripts).
  for i = 1, 2000 do
    local p = i * 0.05
    local us = (i == 2000) and latency.max or latency:percentile(p)
    io.write(string.format("BENCH q %.2f %d\n", p, us))
  end
end
