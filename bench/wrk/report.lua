-- Shared by every wrk script of the harness: counts non-2xx responses in each thread and prints one
-- JSON line (prefixed BENCH_RESULT) with the totals and latency percentiles when the run is done.
-- Loaded with require("report"); the harness sets LUA_PATH so that it is found.

non2xx = 0
local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function response(status, headers, body)
   if status < 200 or status > 299 then
      non2xx = non2xx + 1
      if first_failure == nil then
         first_failure = status .. " " .. string.sub(body or "", 1, 200)
      end
   end
end

local function json_string(value)
   value = string.gsub(value, '[%c"\\]', function(c)
      return string.format("\\u%04x", string.byte(c))
   end)
   return '"' .. value .. '"'
end

function done(summary, latency, requests)
   local bad = 0
   local failure = nil
   for _, thread in ipairs(threads) do
      bad = bad + thread:get("non2xx")
      failure = failure or thread:get("first_failure")
   end
   local errors = summary.errors
   io.write(string.format(
      'BENCH_RESULT {"requests": %d, "duration_us": %d, "non2xx": %d, "connect_errors": %d, ' ..
      '"read_errors": %d, "write_errors": %d, "timeouts": %d, "p50_us": %d, "p99_us": %d, ' ..
      '"max_us": %d, "mean_us": %.1f, "first_failure": %s}\n',
      summary.requests, summary.duration, bad, errors.connect, errors.read, errors.write,
      errors.timeout, latency:percentile(50.0), latency:percentile(99.0), latency.max, latency.mean,
      failure and json_string(failure) or "null"))
end
