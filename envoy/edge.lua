-- paymesh edge: checks a REST request's body before the gRPC-JSON transcoder sees it, and strips
-- grpc-* headers from REST responses. Inlined into the Envoy configuration by
-- services/runtime/envoy.py; it runs after the buffer filter, so a body is at most 1 MiB.
--
-- The transcoder parses JSON with protobuf's parser, which takes a trailing comma, and takes a
-- member given twice (`"amount":100,"amount":200`, `"\u0061mount"`, or a field's proto name and
-- its lowerCamel JSON name) as the last value. So a body is refused here unless it is strict
-- JSON (RFC 8259, UTF-8) whose objects name each member once, and it must be sent as
-- application/json: any other type says the body is something else (curl -d sends a form type).
-- A missing Content-Type is taken as JSON, as before: it claims nothing, and the body is still
-- checked. A refusal sets `paymesh.code` and `paymesh.reason`, which local_reply_config renders
-- in the services' error shape.

local byte, char, find, floor, lower, match, sub, upper, gsub, concat =
  string.byte, string.char, string.find, math.floor, string.lower, string.match, string.sub,
  string.upper, string.gsub, table.concat

local DEPTH_MAX = 64 -- objects and arrays nested deeper are refused (protobuf allows 100)
local INVALID_ARGUMENT = 3 -- google.rpc.Code

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

-- A member name as protobuf's parser sees it: escapes decoded, and `a_b` the same as `aB`
-- (it takes both for one field). A map whose keys differ only so is refused too; rare and
-- ambiguous.
local function member_name(raw)
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
  if find(name, "_", 1, true) then name = gsub(name, "_(.)", upper) end
  return name
end

local scan_value

local function scan_object(s, i, depth)
  if depth > DEPTH_MAX then return nil, "nested too deeply", i end
  local seen = {}
  i = skip_space(s, i + 1)
  if byte(s, i) == 125 then return i + 1 end
  while true do
    if byte(s, i) ~= 34 then return nil, "expected a member name", i end
    local e, why, at = scan_string(s, i)
    if e == nil then return nil, why, at end
    local name = member_name(sub(s, i + 1, e - 2))
    if seen[name] then return nil, "duplicate member name", i end
    seen[name] = true
    i = skip_space(s, e)
    if byte(s, i) ~= 58 then return nil, "expected ':'", i end
    i, why, at = scan_value(s, i + 1, depth)
    if i == nil then return nil, why, at end
    i = skip_space(s, i)
    local c = byte(s, i)
    if c == 125 then return i + 1 end
    if c ~= 44 then return nil, "expected ',' or '}'", i end
    i = skip_space(s, i + 1)
  end
end

local function scan_array(s, i, depth)
  if depth > DEPTH_MAX then return nil, "nested too deeply", i end
  i = skip_space(s, i + 1)
  if byte(s, i) == 93 then return i + 1 end
  while true do
    local why, at
    i, why, at = scan_value(s, i, depth)
    if i == nil then return nil, why, at end
    i = skip_space(s, i)
    local c = byte(s, i)
    if c == 93 then return i + 1 end
    if c ~= 44 then return nil, "expected ',' or ']'", i end
    i = i + 1
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

-- Returns the offset after the value that starts at or after s[i], or nil, why and where.
scan_value = function(s, i, depth)
  i = skip_space(s, i)
  local c = byte(s, i)
  if c == 123 then return scan_object(s, i, depth + 1) end
  if c == 91 then return scan_array(s, i, depth + 1) end
  if c == 34 then return scan_string(s, i) end
  if c == 116 and sub(s, i, i + 3) == "true" then return i + 4 end
  if c == 102 and sub(s, i, i + 4) == "false" then return i + 5 end
  if c == 110 and sub(s, i, i + 3) == "null" then return i + 4 end
  return scan_number(s, i)
end

-- Why the body is not strict JSON and at which 0-based offset, or nil when it is.
local function json_error(s)
  local e, why, at = scan_value(s, 1, 0)
  if e == nil then return why, at - 1 end
  e = skip_space(s, e)
  if e <= #s then return "unexpected data after the value", e - 1 end
  return nil
end

local function refuse(handle, status, reason, message)
  local metadata = handle:streamInfo():dynamicMetadata()
  metadata:set("paymesh", "code", INVALID_ARGUMENT)
  metadata:set("paymesh", "reason", reason)
  handle:respond({ [":status"] = status }, message)
end

function envoy_on_request(handle)
  local content_type = handle:headers():get("content-type")
  if content_type ~= nil and sub(content_type, 1, 16) == "application/grpc" then return end
  -- Remembered for the response: a REST client gets no grpc-* headers.
  handle:streamInfo():dynamicMetadata():set("paymesh", "rest", "1")
  local body = handle:body()
  if body == nil or body:length() == 0 then return end
  if content_type ~= nil
      and lower(match(content_type, "^[ \t]*([^; \t]*)")) ~= "application/json" then
    return refuse(handle, "415", "UNSUPPORTED_MEDIA_TYPE",
                  "the request body must be JSON sent with Content-Type: application/json")
  end
  local why, at = json_error(body:getBytes(0, body:length()))
  if why then
    return refuse(handle, "400", "INVALID_JSON",
                  "the request body is not valid JSON: " .. why .. " at offset " .. at)
  end
end

function envoy_on_response(handle)
  local metadata = handle:streamInfo():dynamicMetadata():get("paymesh")
  if metadata ~= nil and metadata["rest"] == "1" then
    local headers = handle:headers()
    headers:remove("grpc-status")
    headers:remove("grpc-message")
    headers:remove("grpc-status-details-bin")
    headers:remove("grpc-accept-encoding")
    headers:remove("grpc-encoding")
  end
end
