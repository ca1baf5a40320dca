-- The no-op RPC: gRPC health of one service through the edge (HTTP/1.1 to Envoy, HTTP/2 on).
-- Arguments after `--`: <service name>. The body is an empty HealthCheckRequest in its
-- 5-byte gRPC frame (not compressed, length 0).
package.path = debug.getinfo(1, "S").source:match("@?(.*/)") .. "?.lua;" .. package.path
local common = require("common")

setup = common.setup
done = common.done

function init(args)
  wrk.method = "POST"
  wrk.path = "/grpc.health.v1.Health/Check"
  wrk.headers["Content-Type"] = "application/grpc"
  wrk.headers["TE"] = "trailers"
  wrk.headers["x-paymesh-service"] = args[1]
  wrk.body = "\0\0\0\0\0"
end
