-- The customer's OpenSSH public keys, a JSON list of key lines checked when
-- the order is placed. Install templates see them as ssh_authorized_keys.
ALTER TABLE orders ADD COLUMN ssh_authorized_keys TEXT NOT NULL DEFAULT '[]';
