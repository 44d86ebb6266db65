-- tests/api/wrk_mix.lua: a wrk script for the REST API of `mailvault serve` (docs/design/api.md §7).
--
--   MV_TOKEN=mvs_... MV_IDS_FILE=ids.txt wrk -t4 -c50 -d60s --latency -s tests/api/wrk_mix.lua http://127.0.0.1:PORT
--
-- Each connection rotates among
--   search  POST /api/v1/search {"query":Q,"limit":MV_LIMIT,"sort":MV_SORT}, Q from QUERIES below
--   meta    GET  /api/v1/messages/{id}
--   raw     GET  /api/v1/messages/{id}/raw
-- with `Authorization: Bearer $MV_TOKEN`.
--
-- Environment (wrk's Lua has os.getenv and io.open):
--   MV_TOKEN       the bearer token (required)
--   MV_IDS_FILE    file of message ids, one per line (64 hex digits; blank and # lines skipped)
--   MV_IDS         ids separated by commas or spaces (used when MV_IDS_FILE is unset)
--                  one of the two is required unless MV_MIX=search
--   MV_MIX         mix (default: search, meta and raw by MV_WEIGHTS) | search | meta | raw
--   MV_WEIGHTS     default "search=3,meta=2,raw=1": of every 6 requests, 3 searches, 2 meta, 1 raw
--   MV_LIMIT       search limit (default 50, as `mailvault search`)
--   MV_SORT        newest (default; `mailvault search --sort date`) | oldest | relevance
--   MV_QUERIES_FILE  queries one per line instead of the built-in list
--
-- done() prints one line of JSON (it starts with {"script":"wrk_mix"), read by bench/api_bench.sh:
--   requests, responses (seen by response()), non2xx, status counts, per-kind counts, socket
--   errors (connect/read/write/timeout and their sum), wrk's own status-error count (>= 400),
--   duration, requests/s, and latency p50/p95/p99/max/mean in ms (wrk's latency: from
--   sending the request to the end of the response, for every request).
-- Non-2xx responses are counted per status; the first few bodies are kept (non2xx_samples) to
-- say what went wrong. Nothing here fails a run: the bench script judges the numbers.
--
-- The queries are realistic for the SpamAssassin public corpus (scripts/fetch-corpus.sh);
-- every one must be valid in docs/query-language.md, or each search counts as a non-2xx.
-- bench/api_bench.sh reads this list (the lines between the queries:begin/end markers, each
-- exactly one [[query]], form) to time the same queries with `mailvault search`.

-- queries:begin
local QUERIES = {
  [[money]],
  [[free]],
  [[from:yahoo.com]],
  [[subject:re]],
  [[date:2002]],
  [[click here]],
  [["mailing list"]],
  [[subject:razor]],
  [[body:python]],
  [[from:hettinga]],
  [[linux OR unix]],
  [[free NOT linux]],
  [[to:rpm-zzzlist@freshrpms.net]],
  [[date:2002-08-01..2002-09-01]],
  [[remove* subject:free]],
  [[money date:2002-08]],
  [[viagra OR mortgage OR loan]],
  [[perl module]],
  [[has:attachment]],
  [[size:10K..]],
}
-- queries:end

local function json_string(s)
  local esc = { ['"'] = '\\"', ['\\'] = '\\\\', ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t' }
  local out = s:gsub('[%c"\\]', function(c)
    return esc[c] or string.format("\\u%04x", c:byte())
  end)
  return '"' .. out .. '"'
end

local function read_lines(path)
  local f, err = io.open(path, "r")
  if not f then error("wrk_mix.lua: cannot open " .. path .. ": " .. tostring(err)) end
  local out = {}
  for line in f:lines() do
    line = line:gsub("^%s+", ""):gsub("%s+$", "")
    if line ~= "" and line:sub(1, 1) ~= "#" then out[#out + 1] = line end
  end
  f:close()
  return out
end

-- ---- main state: hand each thread an id, keep the threads for done() ----
local threads = {}
local counter = 0

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  threads[#threads + 1] = thread
end

-- ---- per thread ----
function init(args)
  local token = os.getenv("MV_TOKEN")
  if not token or token == "" then error("wrk_mix.lua: set MV_TOKEN to a reviewer's bearer token") end
  local mix = os.getenv("MV_MIX") or "mix"
  local limit = tonumber(os.getenv("MV_LIMIT") or "50")
  local sort = os.getenv("MV_SORT") or "newest"

  local queries = QUERIES
  if os.getenv("MV_QUERIES_FILE") then queries = read_lines(os.getenv("MV_QUERIES_FILE")) end
  if #queries == 0 then error("wrk_mix.lua: no queries") end

  local ids = {}
  if os.getenv("MV_IDS_FILE") then
    ids = read_lines(os.getenv("MV_IDS_FILE"))
  elseif os.getenv("MV_IDS") then
    for id in os.getenv("MV_IDS"):gmatch("[^,%s]+") do ids[#ids + 1] = id end
  end
  for _, id in ipairs(ids) do
    if not id:match("^" .. string.rep("[0-9a-f]", 64) .. "$") then
      error("wrk_mix.lua: not a message id (64 lowercase hex digits): " .. id)
    end
  end

  -- the schedule: which kind the n-th request of this thread is
  local weights = { search = 0, meta = 0, raw = 0 }
  if mix == "mix" then
    for k, v in (os.getenv("MV_WEIGHTS") or "search=3,meta=2,raw=1"):gmatch("(%a+)=(%d+)") do
      if weights[k] == nil then error("wrk_mix.lua: MV_WEIGHTS: unknown kind " .. k) end
      weights[k] = tonumber(v)
    end
  elseif weights[mix] ~= nil then
    weights[mix] = 1
  else
    error("wrk_mix.lua: MV_MIX must be mix, search, meta or raw, not " .. mix)
  end
  if (weights.meta > 0 or weights.raw > 0) and #ids == 0 then
    error("wrk_mix.lua: meta/raw requests need ids: set MV_IDS_FILE or MV_IDS")
  end
  schedule = {}
  -- interleave (search, meta, raw, search, meta, search, ...) rather than runs of one kind
  local left = { search = weights.search, meta = weights.meta, raw = weights.raw }
  while left.search + left.meta + left.raw > 0 do
    for _, k in ipairs({ "search", "meta", "raw" }) do
      if left[k] > 0 then schedule[#schedule + 1] = k; left[k] = left[k] - 1 end
    end
  end
  if #schedule == 0 then error("wrk_mix.lua: MV_WEIGHTS selects nothing") end

  -- all requests are built once here; request() only picks one
  local auth = "Bearer " .. token
  searches, metas, raws = {}, {}, {}
  for i, q in ipairs(queries) do
    local body = '{"query":' .. json_string(q) .. ',"limit":' .. limit .. ',"sort":' .. json_string(sort) .. '}'
    searches[i] = wrk.format("POST", "/api/v1/search",
      { ["Authorization"] = auth, ["Content-Type"] = "application/json" }, body)
  end
  for i, id in ipairs(ids) do
    metas[i] = wrk.format("GET", "/api/v1/messages/" .. id, { ["Authorization"] = auth }, nil)
    raws[i] = wrk.format("GET", "/api/v1/messages/" .. id .. "/raw", { ["Authorization"] = auth }, nil)
  end

  -- start each thread elsewhere in the lists, so threads do not ask in lockstep
  n = tid or 0
  qi, ii = (tid or 0) * 7, (tid or 0) * 131

  mode = mix
  sent = { search = 0, meta = 0, raw = 0 }
  statuses = {}        -- status (as a string) -> count
  kinds_2xx = { search = 0, meta = 0, raw = 0 }
  responses, non2xx = 0, 0
  samples = {}         -- the first few non-2xx answers, "status body..."
end

function request()
  n = n + 1
  local kind = schedule[(n % #schedule) + 1]
  sent[kind] = sent[kind] + 1
  if kind == "search" then
    qi = qi + 1
    return searches[(qi % #searches) + 1]
  end
  ii = ii + 1
  if kind == "meta" then return metas[(ii % #metas) + 1] end
  return raws[(ii % #raws) + 1]
end

local function header(headers, name)
  for k, v in pairs(headers) do
    if k:lower() == name then return v end
  end
  return nil
end

function response(status, headers, body)
  responses = responses + 1
  local s = tostring(status)
  statuses[s] = (statuses[s] or 0) + 1
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    if #samples < 5 then
      samples[#samples + 1] = s .. " " .. (body or ""):sub(1, 200)
    end
    return
  end
  -- which kind answered, from the answer itself (wrk does not say which request it was)
  local ct = (header(headers, "content-type") or ""):lower()
  if ct:find("message/rfc822", 1, true) then
    kinds_2xx.raw = kinds_2xx.raw + 1
  elseif body and body:find('"hits"', 1, true) then
    kinds_2xx.search = kinds_2xx.search + 1
  else
    kinds_2xx.meta = kinds_2xx.meta + 1
  end
end

-- ---- main state, after the run ----
local ARRAY = {}   -- metatable marking a table to be written as a JSON array (even when empty)

local function json_value(v)
  if type(v) == "table" then
    local is_array = #v > 0 or getmetatable(v) == ARRAY
    local parts = {}
    if is_array then
      for _, x in ipairs(v) do parts[#parts + 1] = json_value(x) end
      return "[" .. table.concat(parts, ",") .. "]"
    end
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = tostring(k) end
    table.sort(keys)
    for _, k in ipairs(keys) do
      local x = v[k]
      if x == nil then x = v[tonumber(k)] end
      parts[#parts + 1] = json_string(k) .. ":" .. json_value(x)
    end
    return "{" .. table.concat(parts, ",") .. "}"
  elseif type(v) == "string" then
    return json_string(v)
  elseif type(v) == "number" then
    if v ~= v or v == math.huge or v == -math.huge then return "null" end
    if v == math.floor(v) and math.abs(v) < 2^53 then return string.format("%d", v) end
    return string.format("%.3f", v)
  elseif type(v) == "boolean" then
    return tostring(v)
  end
  return "null"
end

function done(summary, latency, requests)
  local statuses, sent, kinds = {}, { search = 0, meta = 0, raw = 0 }, { search = 0, meta = 0, raw = 0 }
  local responses, non2xx, samples, mode = 0, 0, setmetatable({}, ARRAY), nil
  for _, t in ipairs(threads) do
    responses = responses + (t:get("responses") or 0)
    non2xx = non2xx + (t:get("non2xx") or 0)
    mode = mode or t:get("mode")
    for k, v in pairs(t:get("statuses") or {}) do statuses[k] = (statuses[k] or 0) + v end
    for k, v in pairs(t:get("sent") or {}) do sent[k] = (sent[k] or 0) + v end
    for k, v in pairs(t:get("kinds_2xx") or {}) do kinds[k] = (kinds[k] or 0) + v end
    for _, s in ipairs(t:get("samples") or {}) do
      if #samples < 5 then samples[#samples + 1] = s end
    end
  end
  local e = summary.errors
  local socket_errors = e.connect + e.read + e.write + e.timeout
  local secs = summary.duration / 1e6
  local function ms(us) return us / 1000.0 end
  local out = {
    mode = mode or "?",
    requests = summary.requests,
    responses = responses,
    non2xx = non2xx,
    status = statuses,
    requests_sent_by_kind = sent,
    ok_by_kind = kinds,
    socket_errors = socket_errors,
    errors = { connect = e.connect, read = e.read, write = e.write, timeout = e.timeout, status_ge_400 = e.status },
    duration_s = secs,
    requests_per_s = secs > 0 and summary.requests / secs or 0,
    bytes = summary.bytes,
    latency_ms = {
      p50 = ms(latency:percentile(50)),
      p95 = ms(latency:percentile(95)),
      p99 = ms(latency:percentile(99)),
      max = ms(latency.max),
      mean = ms(latency.mean),
    },
    non2xx_samples = samples,
  }
  -- "script" first makes the line easy to find; json_value writes the other keys sorted
  io.write('{"script":"wrk_mix",', json_value(out):sub(2), "\n")
end
