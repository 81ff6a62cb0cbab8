# Computes the known-answer values of crypto_tests.rs independently of the
# Rust code: Python's hmac and hashlib for RAKP 2/3/4, SIK, K1, K2 and the
# integrity code (IPMI 2.0 sections 13.28.4, 13.31, 13.32), and the openssl
# command for AES-CBC-128. Run: python3 crypto_kat.py
import hmac, hashlib, struct, subprocess
sid_m = struct.pack('<I', 0x11223344)
sid_c = struct.pack('<I', 0x55667788)
rm = bytes(range(0x00, 0x10)); rc = bytes(range(0x10, 0x20)); guid = bytes(range(0x20, 0x30))
role = bytes([0x14]); user = b"admin"; ulen = bytes([len(user)])
kuid = b"password".ljust(20, b"\0")
for name, h, n in (("suite3", hashlib.sha1, 12), ("suite17", hashlib.sha256, 16)):
    H = lambda k, d: hmac.new(k, d, h).digest()
    rakp2 = H(kuid, sid_m + sid_c + rm + rc + guid + role + ulen + user)
    rakp3 = H(kuid, rc + sid_m + role + ulen + user)
    sik = H(kuid, rm + rc + role + ulen + user)
    rakp4 = H(sik, rm + sid_c + guid)[:n]
    k1 = H(sik, b"\x01" * h().digest_size)
    k2 = H(sik, b"\x02" * h().digest_size)
    data = bytes.fromhex("06c0443322110100000020000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1fffff0207")
    integ = H(k1, data)[:n]
    # AES-CBC-128 of a 6-byte payload + pad 1..9 + pad length 9, via openssl
    iv = bytes(range(0x30, 0x40)); payload = bytes.fromhex("2018c8810401")
    pad = (16 - (len(payload) + 1) % 16) % 16
    plain = payload + bytes(range(1, pad + 1)) + bytes([pad])
    ct = subprocess.run(["openssl", "enc", "-aes-128-cbc", "-nopad", "-K", k2[:16].hex(), "-iv", iv.hex()],
                        input=plain, capture_output=True, check=True).stdout
    print(name)
    for k, v in (("rakp2", rakp2), ("rakp3", rakp3), ("sik", sik), ("rakp4", rakp4), ("k1", k1), ("k2", k2), ("integrity", integ), ("aes_ciphertext", ct)):
        print(f"  {k} = {v.hex()}")
