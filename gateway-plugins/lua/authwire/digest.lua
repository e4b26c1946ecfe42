-- SHA-256 and HMAC-SHA256 (hex) for JWT jti hashing and keyed pseudonyms of credential ids.
--
-- Why FFI to OpenSSL: ngx_lua only has SHA-1 built in, and lua-resty-string (resty.sha256) is bundled by
-- APISIX and Kong but not packaged by Debian. Every OpenResty/nginx build links libcrypto, so its one-shot
-- SHA256()/HMAC() are already in the process; a standalone LuaJIT (the contract test) loads the library.
local ffi = require("ffi")

ffi.cdef([[
typedef struct evp_md_st EVP_MD;
const EVP_MD *EVP_sha256(void);
unsigned char *SHA256(const unsigned char *d, size_t n, unsigned char *md);
unsigned char *HMAC(const EVP_MD *evp_md, const void *key, int key_len,
                    const unsigned char *d, size_t n, unsigned char *md, unsigned int *md_len);
]])

local function find_crypto()
  if pcall(function() return ffi.C.EVP_sha256 end) then
    return ffi.C
  end
  for _, name in ipairs({ "crypto", "libcrypto.so.3", "libcrypto.so.1.1" }) do
    local ok, lib = pcall(ffi.load, name)
    if ok and pcall(function() return lib.EVP_sha256 end) then
      return lib
    end
  end
  return nil
end

local C = find_crypto()
local buf = ffi.new("unsigned char[32]")
local len = ffi.new("unsigned int[1]")

local function hex(p, n)
  local out = {}
  for i = 0, n - 1 do
    out[i + 1] = string.format("%02x", p[i])
  end
  return table.concat(out)
end

local _M = {}

_M.available = C ~= nil

function _M.sha256_hex(data)
  if not C then
    return nil, "libcrypto not found"
  end
  C.SHA256(data, #data, buf)
  return hex(buf, 32)
end

function _M.hmac_sha256_hex(key, data)
  if not C then
    return nil, "libcrypto not found"
  end
  C.HMAC(C.EVP_sha256(), key, #key, data, #data, buf, len)
  return hex(buf, len[0])
end

return _M
