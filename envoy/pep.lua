-- Sealgate policy enforcement point (runs after jwt_authn at the target).
--
-- jwt_authn has verified the SAE signature (EdDSA, JWKS), exp/nbf, aud and iss (pinned
-- to the authorizer's issuer URI), and put header and payload in dynamic metadata. This filter checks typ and binds the
-- SAE to this exact request (:method, :path, :authority), cheaply, before the
-- request body is buffered. Single use and the body digest are the verifier's
-- (`sealgate pep serve`, the ext_authz filter after this one): Lua state is per
-- worker and lost on restart, so no replay cache lives here. jwt_authn accepts
-- non-canonical base64url (changed low bits of a segment's last character); the
-- verifier refuses it, so the PEP as a whole does. All of it runs inside pcall: a
-- Lua error would otherwise fail OPEN.

local SAE_TYP = "application/sae.v3+jwt" -- SAE format version 3 only
local MAX_LIFETIME_SECONDS = 300 -- exp - iat; `sealgate envoy pep --max-sae-lifetime` rewrites this line
local CLOCK_SKEW_SECONDS = 5 -- as jwt_authn's clock_skew_seconds

local function json_string(s)
  return '"' .. string.gsub(s, '[%c"\\]', function(c) return string.format("\\u%04x", string.byte(c)) end) .. '"'
end

local function deny(handle, reason, message)
  handle:respond(
    { [":status"] = "403", ["content-type"] = "application/json", ["x-sealgate-reason"] = reason },
    '{"reason_code":' .. json_string(reason) .. ',"message":' .. json_string(message) .. '}'
  )
end

local function check(handle)
  local headers = handle:headers()
  if headers:get("x-sae") == nil then
    return "SAE_MISSING", "no x-sae header: this target only accepts actions authorized by Sealgate"
  end
  if headers:getNumValues("x-sae") ~= 1 then
    return "HEADER_NOT_ALLOWED", "more than one x-sae header"
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
  if type(act) ~= "table" or type(claims["jti"]) ~= "string" or type(claims["exp"]) ~= "number"
      or type(claims["iat"]) ~= "number" then
    return "SAE_INVALID", "SAE lacks act, jti, iat or exp"
  end
  if claims["iat"] > os.time() + CLOCK_SKEW_SECONDS then
    return "SAE_INVALID", "SAE issued in the future"
  end
  if claims["exp"] - claims["iat"] > MAX_LIFETIME_SECONDS then
    return "SAE_INVALID", "SAE lifetime exceeds " .. MAX_LIFETIME_SECONDS .. " s"
  end
  local authority = string.lower(headers:get(":authority") or "")
  if act["m"] ~= headers:get(":method") or act["p"] ~= headers:get(":path") or act["h"] ~= authority then
    return "SAE_BINDING_MISMATCH", "SAE is bound to a different method, path or authority"
  end
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
