-- wrk script: GET the available-pets query with varied filters, following a page's `next`
-- cursor now and then; or GET one fixed path (the reference). Prints lines prefixed "BENCH"
-- in the format of post_json.lua, so bench/loadgen.py parses both alike.
-- usage: wrk -s get_query.lua URL -- query|fixed [FOLLOW_SHARE]

local threads = {}
local species = {"dog", "cat", "bird", "rabbit"}
local ages = {1, 3, 5, 8, 12}
counter = 0
followed = 0

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  mode = args[1]
  follow_share = tonumber(args[2] or "0.25")
  base = wrk.path
  next_path = nil
  math.randomseed(1000 + tid)
end

local function fresh_query()
  local params = {}
  if math.random() < 0.6 then table.insert(params, "species=" .. species[math.random(#species)]) end
  if math.random() < 0.5 then table.insert(params, "maxAge=" .. ages[math.random(#ages)]) end
  if #params == 0 then return base end
  return base .. "?" .. table.concat(params, "&")
end

function request()
  counter = counter + 1
  if mode ~= "query" then return wrk.format("GET", base) end
  if next_path ~= nil and math.random() < follow_share then
    local path = next_path
    next_path = nil
    followed = followed + 1
    return wrk.format("GET", path)
  end
  return wrk.format("GET", fresh_query())
end

function response(status, headers, body)
  if mode == "query" and status == 200 then
    local link = body:match('"next":"https?://[^/"]+(/[^"]*)"')
    if link ~= nil then next_path = link end
  end
end

function done(summary, latency, requests)
  local used, follows = 0, 0
  for _, thread in ipairs(threads) do
    used = used + thread:get("counter")
    follows = follows + thread:get("followed")
  end
  local e = summary.errors
  io.write(string.format(
    "BENCH summary requests=%d duration_us=%d status=%d connect=%d read=%d write=%d timeout=%d used=%d exhausted=0\n",
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout, used))
  io.write(string.format("BENCH followed %d\n", follows))
  for i = 1, 2000 do
    local p = i * 0.05
    local us = (i == 2000) and latency.max or latency:percentile(p)
    io.write(string.format("BENCH q %.2f %d\n", p, us))
  end
end
