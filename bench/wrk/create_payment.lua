-- POST /v1/payments with a unique Idempotency-Key per request.
-- Arguments after `--`: <secret key> <run id> <with card: 0|1> [<requests/s per thread>]
-- With a card (4242 4242 4242 4242, approved by the simulator) the payment starts processing
-- at once; metadata.sent_at_us carries the send time so the webhook receiver can measure
-- create -> webhook latency.
package.path = debug.getinfo(1, "S").source:match("@?(.*/)") .. "?.lua;" .. package.path
local common = require("common")

local api_key, run_id, with_card, counter, paced
local CARD = '"payment_method": {"card": {"number": "4242424242424242", ' ..
  '"exp_month": 12, "exp_year": 2034, "cvc": "123"}}, '

setup = common.setup
done = common.done

function init(args)
  api_key = args[1]
  run_id = args[2]
  with_card = args[3] == "1"
  counter = 0
  if args[4] ~= nil then
    paced = common.pacer(tonumber(args[4]))
  end
end

function delay()
  if paced == nil then
    return 0
  end
  return paced()
end

function request()
  counter = counter + 1
  local key = string.format("bench-%s-%s-%d-%d", run_id, common.process_tag, thread_id, counter)
  local body = string.format(
    '{"amount": 1000, "currency": "USD", %s"metadata": {"bench_key": "%s", "sent_at_us": "%d"}}',
    with_card and CARD or "", key, common.now_us())
  return wrk.format("POST", "/v1/payments", {
    ["Content-Type"] = "application/json",
    ["X-API-Key"] = api_key,
    ["Idempotency-Key"] = key,
  }, body)
end
