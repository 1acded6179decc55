-- The same request against SPREAD different paths in turn, so that writes do not all hit one row.
-- Arguments after "--": METHOD PATH_PREFIX SPREAD BODY ["Header: value" ...]; the path of request n
-- is PATH_PREFIX .. (n mod SPREAD), and every wrk thread starts at a different offset.
require("report")

local method, prefix, spread, body
local headers = {}
local counter = 0

function init(args)
   method = args[1]
   prefix = args[2]
   spread = tonumber(args[3])
   body = args[4]
   for i = 5, #args do
      local name, value = string.match(args[i], "^([^:]+):%s*(.*)$")
      headers[name] = value
   end
   counter = math.random(0, spread - 1)
end

function request()
   counter = counter + 1
   return wrk.format(method, prefix .. (counter % spread), headers, body)
end
