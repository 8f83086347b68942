-- Sealgate policy enforcement point (runs after jwt_authn at the target).
--
-- jwt_authn has verified the SAE signature (EdDSA, JWKS), exp/nbf and aud, and
-- put header and payload in dynamic metadata. This filter checks typ, binds the
-- SAE to this exact request (:method, :path, :authority) and rejects replays by
-- jti. All of it runs inside pcall: a Lua error would otherwise fail OPEN.

local SAE_TYP = "application/sae+jwt"
local MAX_SEEN = 200000 -- jti entries kept per worker before a forced purge

local seen = {} -- jti -> exp (this worker's replay cache)
local seen_count = 0

local function json_string(s)
  return '"' .. string.gsub(s, '[%c"\\]', function(c) return string.format("\\u%04x", string.byte(c)) end) .. '"'
end

local function deny(handle, reason, message)
  handle:respond(
    { [":status"] = "403", ["content-type"] = "application/json", ["x-sealgate-reason"] = reason },
    '{"reason_code":' .. json_string(reason) .. ',"message":' .. json_string(message) .. '}'
  )
end

local function purge(now)
  local kept = 0
  for jti, exp in pairs(seen) do
    if exp < now then seen[jti] = nil else kept = kept + 1 end
  end
  seen_count = kept
end

local function check(handle)
  local headers = handle:headers()
  if headers:get("x-sae") == nil then
    return "SAE_MISSING", "no x-sae header: this target only accepts actions authorized by Sealgate"
  end
  local meta = handle:streamInfo():dynamicMetadata():get("envoy.filters.http.jwt_authn")
  if meta == nil or meta["sae"] == nil or meta["sae_header"] == nil then
    return "SAE_INVALID", "SAE signature, expiry, issuer key or audience did not verify"
  end
  if meta["sae_header"]["typ"] ~= SAE_TYP then
    return "SAE_TYPE_INVALID", "SAE typ must be " .. SAE_TYP
  end
  local claims = meta["sae"]
  local act = claims["act"]
  if type(act) ~= "table" or type(claims["jti"]) ~= "string" or type(claims["exp"]) ~= "number" then
    return "SAE_INVALID", "SAE lacks act, jti or exp"
  end
  local authority = string.lower(headers:get(":authority") or "")
  if act["m"] ~= headers:get(":method") or act["p"] ~= headers:get(":path") or act["h"] ~= authority then
    return "SAE_BINDING_MISMATCH", "SAE is bound to a different method, path or authority"
  end
  local now = os.time()
  local jti = claims["jti"]
  if seen[jti] ~= nil then
    return "SAE_REPLAYED", "SAE was already used"
  end
  if seen_count >= MAX_SEEN then
    purge(now)
    if seen_count >= MAX_SEEN then
      return "PEP_ERROR", "replay cache full"
    end
  end
  seen[jti] = claims["exp"]
  seen_count = seen_count + 1
  return nil, nil
end

function envoy_on_request(handle)
  local ok, reason, message = pcall(check, handle)
  if not ok then
    deny(handle, "PEP_ERROR", "enforcement point error")
  elseif reason ~= nil then
    deny(handle, reason, message)
  end
end
