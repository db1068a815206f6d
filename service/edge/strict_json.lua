-- The edge's JSON guard (Envoy's Lua filter, before the gRPC-JSON transcoder), generated with the
-- schema of what the server serves (service/edge/json_schema.py fills in MESSAGES and ROUTES).
--
-- Requests: the transcoder drops JSON fields its message lacks and forwards the rest, so a typo
-- ("nmae") would reach the server as an empty field. Here every JSON body is read against the
-- message of its route first: an unknown field, a body that is not JSON, a body on a route that takes
-- none, or a body for no route at all is refused (400 / 404) and never forwarded. What this parser
-- cannot read is refused too, so no body reaches the transcoder unchecked.
--
-- Responses: the edge's own refusals (no such method, an unknown query parameter, a body too large,
-- the server unreachable) come as plain text; they become a google.rpc.Status JSON body, the shape
-- of the server's errors, so a client reads every error the same way.

local MESSAGES = __MESSAGES__
local ROUTES = __ROUTES__
local MAX_DEPTH = 64

local byte, sub, find, char, concat = string.byte, string.sub, string.find, string.char, table.concat

-- The google.rpc.Code of an HTTP status the edge answers by itself (as Google's HTTP mapping has them).
local CODES = {[400] = 3, [401] = 16, [403] = 7, [404] = 5, [409] = 10, [413] = 8, [429] = 8, [431] = 8,
               [499] = 1, [500] = 13, [501] = 12, [502] = 14, [503] = 14, [504] = 4}

local function json_string(text)
  return '"' .. text:gsub('[%z\1-\31"\\]', function(c)
    if c == '"' or c == "\\" then return "\\" .. c end
    return string.format("\\u%04x", byte(c))
  end) .. '"'
end

local function status_json(http_status, message, details)
  return '{"code":' .. (CODES[http_status] or 2) .. ',"message":' .. json_string(message)
    .. ',"details":[' .. (details or "") .. ']}'
end

local function refuse(handle, http_status, message, field)
  local details = ""
  if field then
    details = '{"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[{"field":'
      .. json_string(field) .. ',"description":' .. json_string(message) .. '}]}'
  end
  handle:respond({[":status"] = tostring(http_status), ["content-type"] = "application/json"},
                 status_json(http_status, message, details))
end

local function route_for(method, path)
  for _, route in ipairs(ROUTES) do
    if route[1] == method and (route[2] == path or (route[3] and find(path, route[3]))) then
      return route
    end
  end
  return nil
end

-- A problem found while reading: {message, field} unwinds to the pcall in check().
local function fail(message, field)
  error({message, field}, 0)
end

local function skip(s, i)
  local _, last = find(s, "^[ \t\r\n]*", i)
  return last + 1
end

local ESCAPES = {[34] = '"', [92] = "\\", [47] = "/", [98] = "\b", [102] = "\f", [110] = "\n", [114] = "\r",
                 [116] = "\t"}

-- The string starting at s[i] (a quote), decoded, and the position after it. A \u escape beyond
-- ASCII becomes a NUL byte: no field name has one, so such a key is never taken for a field.
local function text(s, i)
  local parts, j = {}, i + 1
  while true do
    local k = find(s, '["\\%z\1-\31]', j)
    if not k then fail("the body is not valid JSON: a string does not end") end
    parts[#parts + 1] = sub(s, j, k - 1)
    local c = byte(s, k)
    if c == 34 then return concat(parts), k + 1 end
    if c ~= 92 then fail("the body is not valid JSON: a control character in a string") end
    local e = byte(s, k + 1)
    if e == 117 then
      local hex = sub(s, k + 2, k + 5)
      if not find(hex, "^%x%x%x%x$") then fail("the body is not valid JSON: a bad \\u escape") end
      local code = tonumber(hex, 16)
      parts[#parts + 1] = code < 128 and char(code) or "\0"
      j = k + 6
    elseif ESCAPES[e] then
      parts[#parts + 1] = ESCAPES[e]
      j = k + 2
    else
      fail("the body is not valid JSON: a bad escape in a string")
    end
  end
end

local function joined(path, key)
  return path == "" and key or path .. "." .. key
end

-- Read the value at s[i] as ``kind`` says: true (anything), a message's name (its fields only), or
-- {map = name} (any keys, each value that message). Returns the position after the value.
local function value(s, i, kind, depth, path)
  if depth > MAX_DEPTH then fail("the body is nested deeper than " .. MAX_DEPTH .. " levels") end
  i = skip(s, i)
  local c = byte(s, i)
  if c == 123 then -- {
    local fields = type(kind) == "string" and MESSAGES[kind] or nil
    i = skip(s, i + 1)
    if byte(s, i) == 125 then return i + 1 end
    while true do
      if byte(s, i) ~= 34 then fail("the body is not valid JSON: a field name was expected") end
      local key
      key, i = text(s, i)
      local child = kind
      if fields then
        child = fields[key]
        if child == nil then
          fail("unknown field " .. json_string(key) .. " in " .. kind, joined(path, key))
        end
      elseif type(kind) == "table" then
        child = kind.map
      end
      i = skip(s, i)
      if byte(s, i) ~= 58 then fail("the body is not valid JSON: ':' was expected") end
      i = skip(s, value(s, i + 1, child, depth + 1, joined(path, key)))
      c = byte(s, i)
      if c == 125 then return i + 1 end
      if c ~= 44 then fail("the body is not valid JSON: ',' or '}' was expected") end
      i = skip(s, i + 1)
    end
  elseif c == 91 then -- [: a repeated field (or a stream of messages), each element of the same kind
    i = skip(s, i + 1)
    if byte(s, i) == 93 then return i + 1 end
    while true do
      i = skip(s, value(s, i, kind, depth + 1, path))
      c = byte(s, i)
      if c == 93 then return i + 1 end
      if c ~= 44 then fail("the body is not valid JSON: ',' or ']' was expected") end
      i = i + 1
    end
  elseif c == 34 then
    local _, after = text(s, i)
    return after
  end
  local _, last = find(s, "^-?%d+%.?%d*[eE]?[-+]?%d*", i)
  if not last then
    _, last = find(s, "^true", i)
    if not last then _, last = find(s, "^false", i) end
    if not last then _, last = find(s, "^null", i) end
  end
  if not last then fail("the body is not valid JSON") end
  return last + 1
end

local function check(s, kind)
  local ok, problem = pcall(function()
    local i = skip(s, value(s, 1, kind, 0, ""))
    if i <= #s then fail("the body is not valid JSON: more after its end") end
  end)
  if ok then return nil end
  if type(problem) ~= "table" then return {"the body could not be read: " .. tostring(problem)} end
  return problem
end

local function is_grpc(content_type)
  return content_type ~= nil and find(content_type, "^application/grpc") ~= nil
end

function envoy_on_request(handle)
  local headers = handle:headers()
  -- gRPC and gRPC-Web (the grpc_web filter before this one made it gRPC) pass: they are the server's to read.
  if is_grpc(headers:get("content-type")) then return end
  local method = headers:get(":method")
  -- CORS preflights are answered by the cors filter before this one.
  if method == "OPTIONS" then return end
  handle:streamInfo():dynamicMetadata():set("hello.edge", "json", "true")
  local path = headers:get(":path") or "/"
  local query = find(path, "?", 1, true)
  if query then path = sub(path, 1, query - 1) end
  local route = route_for(method, path)
  if route == nil then
    refuse(handle, 404, "no method at " .. method .. " " .. path)
    return
  end
  local body = handle:body()
  local bytes = body and body:getBytes(0, body:length()) or ""
  if find(bytes, "^[ \t\r\n]*$") then return end
  if route[4] == false then
    refuse(handle, 400, method .. " " .. path .. " takes no body")
    return
  end
  local problem = check(bytes, route[4])
  if problem then refuse(handle, 400, problem[1], problem[2]) end
end

function envoy_on_response(handle)
  local status = tonumber(handle:headers():get(":status"))
  if status < 400 or is_grpc(handle:headers():get("content-type")) then return end
  local json = handle:streamInfo():dynamicMetadata():get("hello.edge")
  if json == nil then return end
  local content_type = handle:headers():get("content-type") or ""
  if find(content_type, "^application/json") then return end
  local body = handle:body()
  local message = body and body:getBytes(0, body:length()) or ""
  if message == "" then message = "HTTP " .. status end
  local replaced = status_json(status, message)
  handle:headers():replace("content-type", "application/json")
  handle:headers():replace("content-length", tostring(#replaced))
  if body then body:setBytes(replaced) end
end
