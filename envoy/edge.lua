-- paymesh edge: checks a REST request's body before the gRPC-JSON transcoder sees it, and gives
-- REST responses their JSON shape (64-bit integers as numbers, errors in the REST error shape,
-- no grpc-* headers). Inlined into the Envoy configuration by
-- services/runtime/envoy.py; it runs after the buffer filter, so a body is at most 1 MiB.
--
-- The transcoder parses JSON with protobuf's parser, which takes a trailing comma, and takes a
-- member given twice (`"amount":100,"amount":200`, `"\u0061mount"`, or a field's proto name and
-- its lowerCamel JSON name) as the last value. So a body is refused here unless it is strict
-- JSON (RFC 8259, UTF-8) whose objects name each member once, and it must be sent as
-- application/json: any other type says the body is something else (curl -d sends a form type).
-- A missing Content-Type is taken as JSON, as before: it claims nothing, and the body is still
-- checked. A refusal sets `paymesh.reason` (the error's code) and, when a parameter is at
-- fault, `paymesh.field`, which local_reply_config renders in the REST error shape.
--
-- Strict input: the transcoder drops members and query parameters that name no field (a typo
-- such as `captur_method` would capture at once), and answers a value of the wrong type in
-- another shape. So the body and the query are also checked against the route's request
-- message: services/runtime/envoy.py appends one `route` call per REST route, with tables of
-- its fields rendered from the descriptor, and the check rides on the one pass of the scanner.

local byte, char, find, floor, lower, match, sub, upper, gsub, gmatch, concat =
  string.byte, string.char, string.find, math.floor, string.lower, string.match, string.sub,
  string.upper, string.gsub, string.gmatch, table.concat

local DEPTH_MAX = 64 -- objects and arrays nested deeper are refused (protobuf allows 100)

-- The scanners read byte by byte with table lookups, which LuaJIT compiles to tight loops;
-- Lua patterns cost about 20 ns a byte, which made a 48 KB body cost 1 ms more.
local STOP = {} -- bytes that end a run of plain characters in a string
for b = 0, 31 do STOP[b] = true end -- control characters must be escaped
for b = 128, 255 do STOP[b] = true end -- UTF-8, checked sequence by sequence
STOP[34], STOP[92] = true, true -- " \
local HEX, DIGIT = {}, {}
for b = 48, 57 do HEX[b], DIGIT[b] = true, true end
for b = 65, 70 do HEX[b], HEX[b + 32] = true, true end
local ESCAPES = { [34] = '"', [92] = "\\", [47] = "/", [98] = "\b", [102] = "\f", [110] = "\n",
                  [114] = "\r", [116] = "\t" }

local function skip_space(s, i)
  local c = byte(s, i)
  while c == 32 or c == 10 or c == 13 or c == 9 do
    i = i + 1
    c = byte(s, i)
  end
  return i
end

-- The length of the well-formed UTF-8 sequence that starts with byte c at s[i], or nil.
local function utf8_length(s, i, c)
  local n, lo, hi = 0, 128, 191
  if c >= 194 and c <= 223 then n = 1
  elseif c == 224 then n, lo = 2, 160
  elseif (c >= 225 and c <= 236) or c == 238 or c == 239 then n = 2
  elseif c == 237 then n, hi = 2, 159 -- no UTF-16 surrogates
  elseif c == 240 then n, lo = 3, 144
  elseif c >= 241 and c <= 243 then n = 3
  elseif c == 244 then n, hi = 3, 143 -- nothing above U+10FFFF
  else return nil end
  for k = 1, n do
    local d = byte(s, i + k)
    if d == nil or d < lo or d > hi then return nil end
    lo, hi = 128, 191
  end
  return n + 1
end

-- A string starts at s[i] ('"'); returns the offset after it, or nil, why and where.
local function scan_string(s, i)
  local k = i + 1
  while true do
    local c = byte(s, k)
    while c ~= nil and not STOP[c] do
      k = k + 1
      c = byte(s, k)
    end
    if c == nil then return nil, "unterminated string", i end
    if c == 34 then return k + 1 end
    if c == 92 then
      local e = byte(s, k + 1)
      if e == 117 then -- \uXXXX
        if not (HEX[byte(s, k + 2)] and HEX[byte(s, k + 3)] and HEX[byte(s, k + 4)]
                and HEX[byte(s, k + 5)]) then
          return nil, "bad \\u escape", k
        end
        k = k + 6
      elseif ESCAPES[e] then k = k + 2
      else return nil, "bad escape", k end
    elseif c < 32 then return nil, "control character in a string", k
    else
      local n = utf8_length(s, k, c)
      if n == nil then return nil, "not UTF-8", k end
      k = k + n
    end
  end
end

-- Surrogates become three bytes each, so a lone one still compares equal only to itself.
local function utf8_char(cp)
  if cp < 128 then return char(cp) end
  if cp < 2048 then return char(192 + floor(cp / 64), 128 + cp % 64) end
  if cp < 65536 then
    return char(224 + floor(cp / 4096), 128 + floor(cp / 64) % 64, 128 + cp % 64)
  end
  return char(240 + floor(cp / 262144), 128 + floor(cp / 4096) % 64,
              128 + floor(cp / 64) % 64, 128 + cp % 64)
end

-- A member name with its escapes decoded.
local function decoded_name(raw)
  local name = raw
  if find(raw, "\\", 1, true) then
    local out, i, n = {}, 1, #raw
    while i <= n do
      local j = find(raw, "\\", i, true)
      if j == nil then out[#out + 1] = sub(raw, i); break end
      out[#out + 1] = sub(raw, i, j - 1)
      local e = byte(raw, j + 1)
      if e == 117 then
        local cp = tonumber(sub(raw, j + 2, j + 5), 16)
        i = j + 6
        if cp >= 55296 and cp <= 56319 and sub(raw, i, i + 1) == "\\u" then
          local low = tonumber(sub(raw, i + 2, i + 5), 16)
          if low >= 56320 and low <= 57343 then
            cp, i = 65536 + (cp - 55296) * 1024 + (low - 56320), i + 6
          end
        end
        out[#out + 1] = utf8_char(cp)
      else
        out[#out + 1] = ESCAPES[e]
        i = j + 2
      end
    end
    name = concat(out)
  end
  return name
end

-- A decoded member name as protobuf's parser matches it: `a_b` the same as `aB` (it takes
-- both for one field). A map whose keys differ only so is refused too; rare and ambiguous.
local function member_key(name)
  if find(name, "_", 1, true) then name = gsub(name, "_(.)", upper) end
  return name
end

-- What a value of each kind of field must be. "any" (types no request has today) is left to
-- the transcoder.
local EXPECTED = {
  string = "must be a string",
  bool = "must be true or false",
  timestamp = "must be an RFC 3339 timestamp such as 2026-01-31T12:00:00Z",
  message = "must be an object",
  map = "must be an object",
  repeated = "must be an array",
  int32 = "must be an integer from -2147483648 to 2147483647",
  int64 = "must be an integer from -9223372036854775808 to 9223372036854775807",
  uint32 = "must be an integer from 0 to 4294967295",
  uint64 = "must be an integer from 0 to 18446744073709551615",
}
-- The digits of each integer kind's largest value, and of its smallest's magnitude. Protobuf
-- takes an integer as a JSON number or a string of digits (protobuf-es sends int64 so).
local INTEGER_LIMITS = {
  int32 = { "2147483647", "2147483648" },
  int64 = { "9223372036854775807", "9223372036854775808" },
  uint32 = { "4294967295" },
  uint64 = { "18446744073709551615" },
}
local UNKNOWN = "is not a parameter of this request"

local function integer_ok(kind, text)
  local negative = byte(text, 1) == 45
  local digits = negative and sub(text, 2) or text
  if digits == "" or find(digits, "%D") then return false end
  digits = match(digits, "^0*(.*)$")
  local limit = INTEGER_LIMITS[kind][negative and 2 or 1]
  if digits == "" then return true end
  if limit == nil then return false end
  return #digits < #limit or (#digits == #limit and digits <= limit)
end

local function timestamp_ok(text)
  local rest = match(text, "^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d(.*)$")
  if rest == nil then return false end
  rest = match(rest, "^%.%d+(.*)$") or rest
  return rest == "Z" or find(rest, "^[+-]%d%d:%d%d$") ~= nil
end

-- A scalar given as text (a query parameter's value, or a JSON string for a timestamp).
local function text_ok(kind, text)
  if INTEGER_LIMITS[kind] then return integer_ok(kind, text) end
  if kind == "bool" then return text == "true" or text == "false" end
  if kind == "timestamp" then return timestamp_ok(text) end
  return true
end

-- The first parameter at fault in the body being checked, and the path to the value being
-- scanned: trail[d] is the member name (a string) or the array index (a number) at depth d.
-- The scan never yields, so one request at a time uses them in a worker's Lua state.
-- fault_field is BODY when the body itself is at fault (an array, a string, null...): a
-- member's path can be "" too (`{"": 1}`).
local fault_field, fault_description, fault_reason
local trail, BODY = {}, {}

local function fault(depth, description, reason)
  if fault_field ~= nil then return end
  local parts = {}
  for d = 1, depth do
    local step = trail[d]
    if type(step) == "number" then parts[#parts + 1] = "[" .. step .. "]"
    elseif d == 1 then parts[1] = step
    else parts[#parts + 1] = "." .. step end
  end
  fault_field = depth == 0 and BODY or concat(parts)
  fault_description, fault_reason = description, reason
end

local scan_value

-- `fields` (a message's, by name) or `values` (a map's value) say what the members must be;
-- neither for a value of no known field. A fault is noted and the scan goes on, so invalid
-- JSON is still reported as such.
local function scan_object(s, i, depth, fields, values)
  if depth > DEPTH_MAX then return nil, "nested too deeply", i end
  local seen = {}
  i = skip_space(s, i + 1)
  if byte(s, i) == 125 then return i + 1 end
  while true do
    if byte(s, i) ~= 34 then return nil, "expected a member name", i end
    local e, why, at = scan_string(s, i)
    if e == nil then return nil, why, at end
    local raw = sub(s, i + 1, e - 2)
    local name = decoded_name(raw)
    local key = member_key(name)
    if seen[key] then return nil, "duplicate member name", i end
    seen[key] = true
    local spec = values
    if fields ~= nil then
      spec = fields[name]
      trail[depth] = spec and spec.name or raw
      if spec == nil then fault(depth, UNKNOWN, "UNKNOWN_PARAMETER") end
    elseif values ~= nil then
      trail[depth] = raw
    end
    i = skip_space(s, e)
    if byte(s, i) ~= 58 then return nil, "expected ':'", i end
    i, why, at = scan_value(s, i + 1, depth, spec)
    if i == nil then return nil, why, at end
    i = skip_space(s, i)
    local c = byte(s, i)
    if c == 125 then return i + 1 end
    if c ~= 44 then return nil, "expected ',' or '}'", i end
    i = skip_space(s, i + 1)
  end
end

local function scan_array(s, i, depth, item)
  if depth > DEPTH_MAX then return nil, "nested too deeply", i end
  i = skip_space(s, i + 1)
  if byte(s, i) == 93 then return i + 1 end
  local k = 0
  while true do
    local why, at
    if item ~= nil then trail[depth] = k end
    i, why, at = scan_value(s, i, depth, item)
    if i == nil then return nil, why, at end
    i = skip_space(s, i)
    local c = byte(s, i)
    if c == 93 then return i + 1 end
    if c ~= 44 then return nil, "expected ',' or ']'", i end
    i, k = i + 1, k + 1
  end
end

local function scan_digits(s, j) -- the offset after a run of digits from s[j]
  while DIGIT[byte(s, j)] do j = j + 1 end
  return j
end

local function scan_number(s, i)
  local j = i
  if byte(s, j) == 45 then j = j + 1 end -- -
  local c = byte(s, j)
  if c == 48 then j = j + 1 -- a leading 0 stands alone
  elseif DIGIT[c] then j = scan_digits(s, j + 1)
  else return nil, "expected a value", i end
  if byte(s, j) == 46 then -- .
    if not DIGIT[byte(s, j + 1)] then return nil, "bad number", i end
    j = scan_digits(s, j + 1)
  end
  c = byte(s, j)
  if c == 101 or c == 69 then -- e E
    j = j + 1
    c = byte(s, j)
    if c == 43 or c == 45 then j = j + 1 end -- + -
    if not DIGIT[byte(s, j)] then return nil, "bad number", i end
    j = scan_digits(s, j)
  end
  return j
end

-- A value that `spec` describes (nil: anything), at depth `depth` of `trail`.
local function scan_field(s, i, depth, spec, c)
  local kind = spec.kind
  if kind == "message" then
    if c == 123 then return scan_object(s, i, depth + 1, spec.fields) end
  elseif kind == "map" then
    if c == 123 then return scan_object(s, i, depth + 1, nil, spec.value) end
  elseif kind == "repeated" then
    if c == 91 then return scan_array(s, i, depth + 1, spec.item) end
  elseif kind == "string" then
    if c == 34 then return scan_string(s, i) end
  elseif kind == "bool" then
    if c == 116 or c == 102 then return scan_value(s, i, depth) end
  elseif kind == "timestamp" or INTEGER_LIMITS[kind] then
    local e, why, at
    if c == 34 then
      e, why, at = scan_string(s, i)
      if e ~= nil and not text_ok(kind, sub(s, i + 1, e - 2)) then
        fault(depth, EXPECTED[kind], "INVALID_PARAMETER_TYPE")
      end
      return e, why, at
    end
    if kind ~= "timestamp" and (c == 45 or DIGIT[c]) then
      e, why, at = scan_number(s, i)
      if e ~= nil and not integer_ok(kind, sub(s, i, e - 1)) then -- a fraction or exponent too
        fault(depth, EXPECTED[kind], "INVALID_PARAMETER_TYPE")
      end
      return e, why, at
    end
  else -- "any"
    return scan_value(s, i, depth)
  end
  fault(depth, EXPECTED[kind], "INVALID_PARAMETER_TYPE")
  return scan_value(s, i, depth)
end

-- Returns the offset after the value that starts at or after s[i], or nil, why and where.
-- `spec` (nil: anything) says what the value must be; null is every field's default, but not
-- a body (depth 0), which the transcoder would refuse in its own shape.
scan_value = function(s, i, depth, spec)
  i = skip_space(s, i)
  local c = byte(s, i)
  if spec ~= nil and (c ~= 110 or depth == 0) then return scan_field(s, i, depth, spec, c) end
  if c == 123 then return scan_object(s, i, depth + 1) end
  if c == 91 then return scan_array(s, i, depth + 1) end
  if c == 34 then return scan_string(s, i) end
  if c == 116 and sub(s, i, i + 3) == "true" then return i + 4 end
  if c == 102 and sub(s, i, i + 4) == "false" then return i + 5 end
  if c == 110 and sub(s, i, i + 3) == "null" then return i + 4 end
  return scan_number(s, i)
end

-- Why the body is not strict JSON and at which 0-based offset, or nil when it is; then the
-- first parameter at fault is in fault_field.
local function json_error(s, spec)
  fault_field = nil
  local e, why, at = scan_value(s, 1, 0, spec)
  if e == nil then return why, at - 1 end
  e = skip_space(s, e)
  if e <= #s then return "unexpected data after the value", e - 1 end
  return nil
end

-- The REST routes: ROUTES[method] is a tree of path segments (VARIABLE for a `{name}`), and
-- a route's node holds, under LEAF, what its body must be and the query parameters it takes,
-- and the response's fields when it has 64-bit integers; BY_KEY finds that node again for the
-- response, by a key the request leaves in the stream's metadata.
local ROUTES, VARIABLE, LEAF, NO_FIELDS, BY_KEY = {}, {}, {}, {}, {}

-- Adds an HTTP rule of a request message whose fields are `fields` (by proto and JSON name);
-- `body` is the rule's: "*" for all fields but the path's, "" for none. Path-bound fields are
-- taken from the path only. `output` is the response message's fields (nil when it has no
-- 64-bit integer), `stream` whether it is a server stream. Called when the filter loads, by
-- the lines envoy.py appends.
local function route(method, template, fields, body, output, stream)
  local node = ROUTES[method] or {}
  ROUTES[method] = node
  local bound = {}
  for segment in gmatch(template, "[^/]+") do
    local variable = match(segment, "^{(.+)}$")
    if variable then bound[variable] = true end
    local step = variable and VARIABLE or segment
    node[step] = node[step] or {}
    node = node[step]
  end
  local free = {}
  for name, spec in pairs(fields) do
    if not bound[spec.name] then free[name] = spec end
  end
  local key = method .. " " .. template
  node[LEAF] = {
    body = { kind = "message", fields = body == "*" and free or NO_FIELDS },
    query = body == "*" and NO_FIELDS or free,
    output = output,
    stream = stream,
    key = key,
  }
  BY_KEY[key] = node[LEAF]
end

-- No two templates match one path (envoy.py checks), but a literal and a variable can share
-- a prefix (`/v1/payments/{id}`, `/v1/payments/x/capture`): try the literal first.
local function lookup(node, segments, k)
  if node == nil then return nil end
  if segments[k] == nil then return node[LEAF] end
  return lookup(node[segments[k]], segments, k + 1) or lookup(node[VARIABLE], segments, k + 1)
end

local function unescape(text)
  if not find(text, "%", 1, true) then return text end
  return (gsub(text, "%%(%x%x)", function(hex) return char(tonumber(hex, 16)) end))
end

-- The first query parameter at fault, its description and reason; nil when all are known.
-- A nested field is named with dots (`a.b`), a repeated one once per value.
local function query_fault(fields, query)
  for pair in gmatch(query, "[^&]+") do
    local raw, value = match(pair, "^([^=]*)=?(.*)$")
    local spec, within = nil, fields
    for part in gmatch(unescape(raw), "[^.]+") do
      spec = within and within[part]
      if spec == nil then break end
      within = spec.kind == "message" and spec.fields or nil
    end
    local kind = spec and (spec.kind == "repeated" and spec.item.kind or spec.kind)
    if kind == nil or kind == "message" or kind == "map" then
      return raw, UNKNOWN, "UNKNOWN_PARAMETER"
    end
    if not text_ok(kind, unescape(value)) then
      return raw, EXPECTED[kind], "INVALID_PARAMETER_TYPE"
    end
  end
end

-- A name as it can go in a message: the client's own text, clipped, printable ASCII only.
local function printable(name)
  return (gsub(sub(name, 1, 100), "[^\32-\126]", "?"))
end

local function refuse(handle, status, reason, message, field)
  local metadata = handle:streamInfo():dynamicMetadata()
  metadata:set("paymesh", "reason", lower(reason))
  if field ~= nil then
    metadata:set("paymesh", "field", field)
  end
  handle:respond({ [":status"] = status }, message)
end

local function refuse_parameter(handle, field, description, reason)
  field = printable(field)
  -- An empty name (`?=1`, `{"": 1}`) is shown as "" rather than as nothing.
  local message = reason == "UNKNOWN_PARAMETER"
                  and "unknown parameter: " .. (field == "" and '""' or field)
                  or field .. ": " .. description
  return refuse(handle, "400", reason, message, field)
end

function envoy_on_request(handle)
  local headers = handle:headers()
  local content_type = headers:get("content-type")
  if content_type ~= nil and sub(content_type, 1, 16) == "application/grpc" then return end
  local path, query = match(headers:get(":path"), "^([^?]*)%??(.*)$")
  local segments = {}
  for segment in gmatch(path, "[^/]+") do segments[#segments + 1] = segment end
  -- An unknown route is the transcoder's to answer (404).
  local known = lookup(ROUTES[headers:get(":method")], segments, 1)
  -- A header whose name gRPC metadata cannot carry (HTTP allows `#`, `$`, `^`... in names) is
  -- dropped: the services' gRPC server would reset the call, and no operation reads it.
  local unfit = nil
  for name, _ in pairs(headers) do
    if byte(name, 1) ~= 58 and find(name, "[^0-9a-z_.%-]") then
      unfit = unfit or {}
      unfit[#unfit + 1] = name
    end
  end
  if unfit ~= nil then
    for _, name in ipairs(unfit) do headers:remove(name) end
  end
  -- Remembered for the response: a REST client gets no grpc-* headers, its errors in the REST
  -- shape with the request id, and its 64-bit integers as numbers.
  local metadata = handle:streamInfo():dynamicMetadata()
  metadata:set("paymesh", "rest", "1")
  metadata:set("paymesh", "request_id", printable(headers:get("x-request-id") or ""))
  if known ~= nil and known.output ~= nil then metadata:set("paymesh", "route", known.key) end
  local body = handle:body()
  if body ~= nil and body:length() > 0 then
    if content_type ~= nil
        and lower(match(content_type, "^[ \t]*([^; \t]*)")) ~= "application/json" then
      return refuse(handle, "415", "UNSUPPORTED_MEDIA_TYPE",
                    "the request body must be JSON sent with Content-Type: application/json")
    end
    local why, at = json_error(body:getBytes(0, body:length()), known and known.body)
    if why then
      return refuse(handle, "400", "INVALID_JSON",
                    "the request body is not valid JSON: " .. why .. " at offset " .. at)
    end
    if fault_field == BODY then
      return refuse(handle, "400", fault_reason, "the request body must be a JSON object")
    end
    if fault_field ~= nil then
      return refuse_parameter(handle, fault_field, fault_description, fault_reason)
    end
  end
  if known ~= nil and query ~= "" then
    local field, description, reason = query_fault(known.query, query)
    if field ~= nil then return refuse_parameter(handle, field, description, reason) end
  end
end

-- Responses. The transcoder prints a 64-bit integer as a JSON string ("amount":"100"), and a
-- service's error as the google.rpc.Status in JSON. REST clients get numbers, and errors in
-- the one REST shape: {"error": {"type", "code", "message", "param", "request_id"}} (the
-- edge's own errors get that shape from local_reply_config).

-- Offset after the JSON string that starts at s[i] ('"'). The transcoder's output is valid
-- JSON, so the string ends.
local function skip_string(s, i)
  local k = i + 1
  while true do
    local q = find(s, '["\\]', k)
    if q == nil then return #s + 1 end
    if byte(s, q) == 34 then return q + 1 end
    k = q + 2
  end
end

-- Offset after the value at s[i], whatever it is (no whitespace: the transcoder prints none).
local function skip_any(s, i)
  local c = byte(s, i)
  if c == 34 then return skip_string(s, i) end
  if c ~= 123 and c ~= 91 then return find(s, "[,}%]]", i) or #s + 1 end
  local depth, k = 0, i
  while true do
    k = find(s, '["{}%[%]]', k)
    if k == nil then return #s + 1 end
    c = byte(s, k)
    if c == 34 then k = skip_string(s, k)
    else
      depth = (c == 123 or c == 91) and depth + 1 or depth - 1
      k = k + 1
      if depth == 0 then return k end
    end
  end
end

-- The offsets of the quotes around each 64-bit integer found, in order.
local quotes, nquotes = {}, 0
local walk_value

-- An object at s[i]: a message's (by proto field name: the transcoder prints those) or a map's.
local function walk_object(s, i, fields, values)
  local k = i + 1
  if byte(s, k) == 125 then return k + 1 end
  while true do
    local e = skip_string(s, k)
    local spec = values or fields[sub(s, k + 1, e - 2)]
    k = spec and walk_value(s, e + 1, spec) or skip_any(s, e + 1)
    if byte(s, k) == 125 then return k + 1 end
    k = k + 1 -- ,
  end
end

walk_value = function(s, i, spec)
  local c, kind = byte(s, i), spec.kind
  if c == 34 and (kind == "int64" or kind == "uint64") then
    local e = skip_string(s, i)
    quotes[nquotes + 1], quotes[nquotes + 2] = i, e - 1
    nquotes = nquotes + 2
    return e
  end
  if c == 123 then
    if kind == "message" then return walk_object(s, i, spec.fields) end
    if kind == "map" then return walk_object(s, i, nil, spec.value) end
  elseif c == 91 and kind == "repeated" then
    local k = i + 1
    if byte(s, k) == 93 then return k + 1 end
    while true do
      k = walk_value(s, k, spec.item)
      if byte(s, k) == 93 then return k + 1 end
      k = k + 1 -- ,
    end
  end
  return skip_any(s, i)
end

-- The JSON `s` of a message with these fields, with its 64-bit integers unquoted; nil when
-- it has none. A value is at most 2^53 in magnitude wherever the API can put it (amounts are
-- at most 99,999,999,999), so every JSON parser reads it exactly.
local function numbers_unquoted(s, fields)
  nquotes = 0
  walk_object(s, 1, fields)
  if nquotes == 0 then return nil end
  local parts, last = {}, 1
  for n = 1, nquotes do
    parts[n] = sub(s, last, quotes[n] - 1)
    last = quotes[n] + 1
  end
  parts[nquotes + 1] = sub(s, last)
  return concat(parts)
end

-- The REST shape of the transcoder's google.rpc.Status JSON. `code` is the ErrorInfo's reason
-- in lower case (the gRPC code's name when a status has none), `type` the catalog's
-- (ERROR_TYPES, appended by envoy.py from services/runtime/errors.py).
local ERROR_TYPES = {}
local GRPC_CODES = { "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
  "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
  "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE",
  "DATA_LOSS", "UNAUTHENTICATED" }

local function type_of(reason, status)
  local known = ERROR_TYPES[reason]
  if known then return known end
  if status == 401 then return "authentication_error" end
  if status == 403 then return "permission_error" end
  if status == 429 then return "rate_limit_error" end
  if status >= 500 then return "api_error" end
  return "invalid_request_error"
end

local function json_text(text)
  return '"' .. gsub(text, '[%c"\\]', function(c)
    return c == '"' and '\\"' or c == "\\" and "\\\\" or string.format("\\u%04x", byte(c))
  end) .. '"'
end

local function rest_error(s, status, request_id)
  local message, after = '""', 1
  local m = find(s, '"message":"', 1, true)
  if m then
    after = skip_string(s, m + 10)
    message = sub(s, m + 10, after - 1)
  end
  local reason = match(s, '"reason":"([A-Z0-9_]+)"', after)
  if reason == nil then
    reason = GRPC_CODES[tonumber(match(s, '^{"code":(%d+)') or 2)] or "UNKNOWN"
  end
  local param = ""
  local f = find(s, '"field_violations":[{"field":"', after, true)
  if f then
    local e = skip_string(s, f + 29) -- the field's opening quote
    param = ',"param":' .. sub(s, f + 29, e - 1)
  end
  return '{"error":{"type":"' .. type_of(reason, status) .. '","code":"' .. lower(reason)
    .. '","message":' .. message .. param .. ',"request_id":' .. json_text(request_id) .. "}}"
end

function envoy_on_response(handle)
  local metadata = handle:streamInfo():dynamicMetadata():get("paymesh")
  if metadata == nil or metadata["rest"] ~= "1" then return end
  local headers = handle:headers()
  headers:remove("grpc-status")
  headers:remove("grpc-message")
  headers:remove("grpc-status-details-bin")
  headers:remove("grpc-accept-encoding")
  headers:remove("grpc-encoding")
  local status = tonumber(headers:get(":status")) or 0
  if status >= 400 then
    -- A service's error, as the transcoder prints a google.rpc.Status (the edge's own errors
    -- have the REST shape already).
    local body = handle:body()
    if body == nil or body:length() < 8 or body:getBytes(0, 8) ~= '{"code":' then return end
    body:setBytes(rest_error(body:getBytes(0, body:length()), status, metadata["request_id"]))
    return
  end
  local known = metadata["route"] and BY_KEY[metadata["route"]]
  if known == nil then return end
  if known.stream then
    -- Server-sent events: each chunk is one `data: {...}` event, as the transcoder writes it.
    for chunk in handle:bodyChunks() do
      local text = chunk:getBytes(0, chunk:length())
      local prefix, json, suffix = match(text, "^(data: )({.*})(%s*)$")
      if json ~= nil then
        local changed = numbers_unquoted(json, known.output)
        if changed ~= nil then chunk:setBytes(prefix .. changed .. suffix) end
      end
    end
    return
  end
  local body = handle:body()
  if body == nil or body:length() == 0 then return end
  local changed = numbers_unquoted(body:getBytes(0, body:length()), known.output)
  if changed ~= nil then body:setBytes(changed) end
end
