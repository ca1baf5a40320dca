-- GET /v1/payments/{id} of a payment that exists: REST through the transcoder, API-key auth
-- (cached), the rate limiter, one primary-key read, the payment rendered as JSON.
-- Arguments after `--`: <secret key> <payment id of that key's merchant and mode>.
package.path = debug.getinfo(1, "S").source:match("@?(.*/)") .. "?.lua;" .. package.path
local common = require("common")

setup = common.setup
done = common.done

function init(args)
  wrk.method = "GET"
  wrk.path = "/v1/payments/" .. args[2]
  wrk.headers["X-API-Key"] = args[1]
end
