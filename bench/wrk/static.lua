-- One fixed request, built once per thread (wrk's fast path: no Lua call per request).
-- Arguments after "--": METHOD PATH BODY ["Header: value" ...]; BODY "-" means no body.
require("report")

function init(args)
   wrk.method = args[1]
   wrk.path = args[2]
   if args[3] ~= "-" then
      wrk.body = args[3]
   end
   for i = 4, #args do
      local name, value = string.match(args[i], "^([^:]+):%s*(.*)$")
      wrk.headers[name] = value
   end
end
