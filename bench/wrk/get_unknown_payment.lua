-- GET /v1/payments/{unknown id}: REST through the transcoder, API-key auth (cached), one
-- primary-key lookup, a 404 rendered as JSON. Arguments after `--`: <secret key>.
package.path = debug.getinfo(1, "S").source:match("@?(.*/)") .. "?.lua;" .. package.path
local common = require("common")

setup = common.setup
done = common.done

function init(args)
  wrk.method = "GET"
  wrk.path = "/v1/payments/pay_BenchUnknownPayment0000"
  wrk.headers["X-API-Key"] = args[1]
end
