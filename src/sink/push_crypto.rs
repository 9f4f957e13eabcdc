//! Web Push message encryption (RFC 8291) and VAPID (RFC 8292).
//!
//! A push message is one `aes128gcm` record (RFC 8188) encrypted for a
//! browser subscription's `p256dh` key and `auth` secret, under a fresh
//! salt and a fresh ephemeral P-256 key pair. The application server
//! identifies itself to the push service with a VAPID `Authorization`
//! header: an ES256 JWT naming the push service's origin, an expiry and a
//! contact, signed with the server's long-lived P-256 key.
//!
//! Everything here is a pure function of its inputs (and, for
//! [`encrypt`], of the random salt and ephemeral key it draws); sending
//! the request is the caller's business.

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::Aes128Gcm;
use base64::alphabet::URL_SAFE;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use hkdf::Hkdf;
use p256::ecdh::SharedSecret;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use p256::elliptic_curve::zeroize::Zeroizing;
use p256::{PublicKey, SecretKey};
use rand::RngCore as _;
use sha2::Sha256;

/// Field name of a subscription's public key in errors.
const P256DH: &str = "p256dh";
/// Field name of a subscription's authentication secret in errors.
const AUTH: &str = "auth";
/// Field name of the VAPID private key in errors.
const VAPID_PRIVATE_KEY: &str = "VAPID private key";

/// Length of a raw P-256 private scalar.
const PRIVATE_KEY_LEN: usize = 32;
/// Length of an uncompressed SEC1 P-256 point (0x04 || x || y).
const PUBLIC_KEY_LEN: usize = 65;
/// SEC1 tag byte of an uncompressed point.
const UNCOMPRESSED_TAG: u8 = 0x04;
/// Length of a subscription's authentication secret.
const AUTH_LEN: usize = 16;
/// Length of the aes128gcm salt.
const SALT_LEN: usize = 16;
/// Length of the AES-GCM authentication tag.
const TAG_LEN: usize = 16;
/// Length of the AES-128 content-encryption key.
const CEK_LEN: usize = 16;
/// Length of the AES-GCM nonce.
const NONCE_LEN: usize = 12;
/// Length of the input keying material RFC 8291 derives.
const IKM_LEN: usize = 32;
/// The aes128gcm record size announced in the header.
const RECORD_SIZE: u32 = 4096;
/// The aes128gcm `idlen` header byte: the key id is the sender's public key.
const KEY_ID_LEN: u8 = 65;
/// Length of the aes128gcm header: salt || rs (u32) || idlen (u8) || key id.
const HEADER_LEN: usize = SALT_LEN + 4 + 1 + PUBLIC_KEY_LEN;
/// The padding delimiter that ends the last (here: only) record.
const LAST_RECORD_DELIMITER: u8 = 0x02;

/// Prefix of RFC 8291's `key_info`, followed by the two public keys.
const KEY_INFO_PREFIX: &[u8] = b"WebPush: info\0";
/// RFC 8188's HKDF info for the content-encryption key.
const CEK_INFO: &[u8] = b"Content-Encoding: aes128gcm\0";
/// RFC 8188's HKDF info for the nonce.
const NONCE_INFO: &[u8] = b"Content-Encoding: nonce\0";

/// The JOSE header of every VAPID token, already in its JSON form.
const JWT_HEADER: &str = r#"{"typ":"JWT","alg":"ES256"}"#;

/// Largest plaintext whose encrypted body (86-byte header + plaintext + 1
/// padding delimiter + 16-byte tag) fits in 4096 bytes: 3993.
pub const MAX_PLAINTEXT: usize = 3993;

/// The largest plaintext fills the 4096 bytes exactly.
const _: () = assert!(HEADER_LEN + MAX_PLAINTEXT + 1 + TAG_LEN == RECORD_SIZE as usize);
/// The key id is exactly the uncompressed public key.
const _: () = assert!(KEY_ID_LEN as usize == PUBLIC_KEY_LEN);

/// base64url that decodes with or without `=` padding and encodes without.
const BASE64URL_ANY_PADDING: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a key or a subscription cannot be used (messages name the field and
/// never print key material).
#[derive(Debug, thiserror::Error)]
pub enum PushCryptoError {
    /// The field is not base64url text.
    #[error("{field} is not base64url")]
    NotBase64url {
        /// Which field.
        field: &'static str,
    },
    /// The field decodes to the wrong number of bytes.
    #[error("{field} is {actual} bytes, expected {expected}")]
    WrongLength {
        /// Which field.
        field: &'static str,
        /// The length the field must have.
        expected: usize,
        /// The length it has.
        actual: usize,
    },
    /// The field has the length of an uncompressed point but not its
    /// leading 0x04 byte.
    #[error("{field} is not an uncompressed P-256 point (it must start with 0x04)")]
    NotUncompressed {
        /// Which field.
        field: &'static str,
    },
    /// The field is not a point on the P-256 curve.
    #[error("{field} is not a point on the P-256 curve")]
    NotOnCurve {
        /// Which field.
        field: &'static str,
    },
    /// The field is zero or not below the P-256 group order.
    #[error("{field} is not a valid P-256 private key (zero or not below the group order)")]
    InvalidPrivateKey {
        /// Which field.
        field: &'static str,
    },
    /// The plaintext does not fit in one Web Push message.
    #[error("plaintext is {len} bytes, more than the {max} a Web Push message can carry")]
    PlaintextTooLarge {
        /// The plaintext's length.
        len: usize,
        /// [`MAX_PLAINTEXT`].
        max: usize,
    },
}

/// Decodes base64url (padded or not) and checks the decoded length; the
/// bytes are wiped when dropped.
fn decode_exact(
    field: &'static str,
    text: &str,
    expected: usize,
) -> Result<Zeroizing<Vec<u8>>, PushCryptoError> {
    let bytes = Zeroizing::new(
        BASE64URL_ANY_PADDING
            .decode(text)
            .map_err(|_| PushCryptoError::NotBase64url { field })?,
    );
    if bytes.len() != expected {
        return Err(PushCryptoError::WrongLength {
            field,
            expected,
            actual: bytes.len(),
        });
    }
    Ok(bytes)
}

/// base64url without padding.
fn encode_base64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The uncompressed SEC1 encoding of a public key.
fn uncompressed(key: &PublicKey) -> p256::EncodedPoint {
    key.to_encoded_point(false)
}

/// The application server's VAPID key pair.
pub struct Vapid {
    /// Signs the VAPID tokens.
    signing: SigningKey,
    /// base64url (no padding) of the uncompressed public point.
    public_key: String,
}

impl Vapid {
    /// From base64url (with or without padding) of the raw 32-byte P-256
    /// private scalar, as `web-push generate-vapid-keys` prints it.
    pub fn from_private_base64url(key: &str) -> Result<Self, PushCryptoError> {
        let bytes = decode_exact(VAPID_PRIVATE_KEY, key, PRIVATE_KEY_LEN)?;
        let signing =
            SigningKey::from_slice(&bytes).map_err(|_| PushCryptoError::InvalidPrivateKey {
                field: VAPID_PRIVATE_KEY,
            })?;
        let point = signing.verifying_key().to_encoded_point(false);
        Ok(Self {
            public_key: encode_base64url(point.as_bytes()),
            signing,
        })
    }

    /// base64url (no padding) of the uncompressed 65-byte public point.
    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    /// The `Authorization` header value: `vapid t=<JWT>, k=<public key>`.
    ///
    /// The JWT is ES256 (JOSE header `{"typ":"JWT","alg":"ES256"}`) with
    /// the claims `aud` (the push endpoint's origin, `scheme://host[:port]`),
    /// `exp` (`expires_at`, unix seconds) and `sub` (`subject`, a `mailto:`
    /// or `https:` contact); its signature is the 64-byte `r || s` form.
    pub fn authorization(&self, audience: &str, subject: &str, expires_at: u64) -> String {
        format!(
            "vapid t={}, k={}",
            self.token(audience, subject, expires_at),
            self.public_key
        )
    }

    /// The signed VAPID JWT.
    fn token(&self, audience: &str, subject: &str, expires_at: u64) -> String {
        let claims = serde_json::json!({ "aud": audience, "exp": expires_at, "sub": subject });
        let signing_input = format!(
            "{}.{}",
            encode_base64url(JWT_HEADER.as_bytes()),
            encode_base64url(claims.to_string().as_bytes())
        );
        let signature: Signature = self.signing.sign(signing_input.as_bytes());
        format!(
            "{signing_input}.{}",
            encode_base64url(&signature.to_bytes())
        )
    }
}

impl std::fmt::Debug for Vapid {
    /// Shows the public key only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vapid")
            .field("public_key", &self.public_key)
            .finish_non_exhaustive()
    }
}

/// A browser subscription's keys (`keys.p256dh`, `keys.auth` of
/// PushSubscription JSON).
#[derive(Clone)]
pub struct SubscriptionKeys {
    /// The user agent's public key (`ua_public`).
    ua_public: PublicKey,
    /// The authentication secret (`auth_secret`).
    auth: [u8; AUTH_LEN],
}

impl SubscriptionKeys {
    /// p256dh: base64url of a 65-byte uncompressed P-256 point on the
    /// curve; auth: base64url of exactly 16 bytes. Both are accepted with
    /// or without padding; anything else is refused with the reason.
    pub fn parse(p256dh: &str, auth: &str) -> Result<Self, PushCryptoError> {
        Ok(Self {
            ua_public: parse_ua_public(p256dh)?,
            auth: parse_auth(auth)?,
        })
    }
}

impl std::fmt::Debug for SubscriptionKeys {
    /// Shows neither key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriptionKeys").finish_non_exhaustive()
    }
}

/// Parses `keys.p256dh`: an uncompressed point on P-256.
fn parse_ua_public(text: &str) -> Result<PublicKey, PushCryptoError> {
    let bytes = decode_exact(P256DH, text, PUBLIC_KEY_LEN)?;
    if bytes[0] != UNCOMPRESSED_TAG {
        return Err(PushCryptoError::NotUncompressed { field: P256DH });
    }
    PublicKey::from_sec1_bytes(&bytes).map_err(|_| PushCryptoError::NotOnCurve { field: P256DH })
}

/// Parses `keys.auth`: 16 bytes.
fn parse_auth(text: &str) -> Result<[u8; AUTH_LEN], PushCryptoError> {
    let bytes = decode_exact(AUTH, text, AUTH_LEN)?;
    Ok(<[u8; AUTH_LEN]>::try_from(bytes.as_slice())
        .expect("decode_exact checked that auth is AUTH_LEN bytes"))
}

/// Encrypts `plaintext` for the subscription as one aes128gcm record
/// (record size 4096), with a fresh random 16-byte salt and a fresh
/// ephemeral P-256 key pair; returns the whole request body
/// (salt || rs || idlen=65 || ephemeral public key || ciphertext). Error if
/// `plaintext.len() > MAX_PLAINTEXT`.
pub fn encrypt(keys: &SubscriptionKeys, plaintext: &[u8]) -> Result<Vec<u8>, PushCryptoError> {
    let mut salt = [0u8; SALT_LEN];
    rand::rng().fill_bytes(&mut salt);
    encrypt_with(keys, plaintext, &salt, &random_secret_key())
}

/// A fresh P-256 private key from the thread's CSPRNG.
fn random_secret_key() -> SecretKey {
    loop {
        let mut bytes = Zeroizing::new([0u8; PRIVATE_KEY_LEN]);
        rand::rng().fill_bytes(bytes.as_mut());
        // Fails only for zero or a value not below the group order, a
        // chance of about 2^-32; draw again then.
        if let Ok(key) = SecretKey::from_slice(bytes.as_slice()) {
            return key;
        }
    }
}

/// [`encrypt`] with the salt and the ephemeral (application server) private
/// key given.
fn encrypt_with(
    keys: &SubscriptionKeys,
    plaintext: &[u8],
    salt: &[u8; SALT_LEN],
    ephemeral: &SecretKey,
) -> Result<Vec<u8>, PushCryptoError> {
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(PushCryptoError::PlaintextTooLarge {
            len: plaintext.len(),
            max: MAX_PLAINTEXT,
        });
    }
    let as_public = uncompressed(&ephemeral.public_key());
    let shared =
        p256::ecdh::diffie_hellman(ephemeral.to_nonzero_scalar(), keys.ua_public.as_affine());
    let ikm = derive_ikm(
        &shared,
        &keys.auth,
        uncompressed(&keys.ua_public).as_bytes(),
        as_public.as_bytes(),
    );
    let (cek, nonce) = derive_content_keys(salt, ikm.as_slice());
    let mut body = header(salt, as_public.as_bytes(), plaintext.len());
    body.extend_from_slice(plaintext);
    body.push(LAST_RECORD_DELIMITER);
    seal_record(&cek, &nonce, &mut body);
    Ok(body)
}

/// RFC 8291 section 3.4: `PRK_key = HMAC-SHA-256(auth_secret, ecdh_secret)`,
/// `IKM = HKDF-Expand(PRK_key, "WebPush: info" || 0x00 || ua_public ||
/// as_public, 32)`.
fn derive_ikm(
    shared: &SharedSecret,
    auth: &[u8; AUTH_LEN],
    ua_public: &[u8],
    as_public: &[u8],
) -> Zeroizing<[u8; IKM_LEN]> {
    let key_info = [KEY_INFO_PREFIX, ua_public, as_public].concat();
    let prk_key = Hkdf::<Sha256>::new(Some(auth), shared.raw_secret_bytes());
    expand(&prk_key, &key_info)
}

/// RFC 8188 section 2.2 and 2.3: the content-encryption key and the nonce
/// from `PRK = HKDF-Extract(salt, IKM)`.
fn derive_content_keys(
    salt: &[u8; SALT_LEN],
    ikm: &[u8],
) -> (Zeroizing<[u8; CEK_LEN]>, Zeroizing<[u8; NONCE_LEN]>) {
    let prk = Hkdf::<Sha256>::new(Some(salt), ikm);
    (expand(&prk, CEK_INFO), expand(&prk, NONCE_INFO))
}

/// HKDF-Expand of `N` bytes, wiped when dropped.
fn expand<const N: usize>(prk: &Hkdf<Sha256>, info: &[u8]) -> Zeroizing<[u8; N]> {
    let mut okm = Zeroizing::new([0u8; N]);
    prk.expand(info, okm.as_mut())
        .expect("at most 32 bytes are asked, far below HKDF-SHA-256's 8160-byte limit");
    okm
}

/// The aes128gcm header (salt || rs || idlen || key id), in a buffer with
/// room for the record that follows it.
fn header(salt: &[u8; SALT_LEN], as_public: &[u8], plaintext_len: usize) -> Vec<u8> {
    let mut body = Vec::with_capacity(HEADER_LEN + plaintext_len + 1 + TAG_LEN);
    body.extend_from_slice(salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    body.push(KEY_ID_LEN);
    body.extend_from_slice(as_public);
    body
}

/// Encrypts in place everything after the header of `body` (the padded
/// record) and appends the tag.
fn seal_record(cek: &[u8; CEK_LEN], nonce: &[u8; NONCE_LEN], body: &mut Vec<u8>) {
    let cipher = Aes128Gcm::new(cek.into());
    let tag = cipher
        .encrypt_in_place_detached(nonce.into(), b"", &mut body[HEADER_LEN..])
        .expect("a record of at most 3994 bytes is far below AES-GCM's 64 GiB limit");
    body.extend_from_slice(&tag);
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes_gcm::aead::Aead;
    use hmac::{Hmac, Mac};
    use p256::ecdsa::signature::Verifier as _;
    use p256::ecdsa::VerifyingKey;
    use serde_json::{json, Value};

    // RFC 8291 section 5 (and appendix A).
    const PLAINTEXT: &str = "When I grow up, I want to be a watermelon";
    const UA_PRIVATE: &str = "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94";
    const UA_PUBLIC: &str =
        "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
    const AUTH_SECRET: &str = "BTBZMqHH6r4Tts7J_aSIgg";
    const AS_PRIVATE: &str = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw";
    const AS_PUBLIC: &str =
        "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8";
    const SALT: &str = "DGv6ra1nlYgDCS1FRnbzlw";
    const BODY: &str = "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN";

    fn b64(text: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(text).unwrap()
    }

    fn secret(text: &str) -> SecretKey {
        SecretKey::from_slice(&b64(text)).unwrap()
    }

    fn rfc_keys() -> SubscriptionKeys {
        SubscriptionKeys::parse(UA_PUBLIC, AUTH_SECRET).unwrap()
    }

    fn rfc_salt() -> [u8; SALT_LEN] {
        b64(SALT).try_into().unwrap()
    }

    fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// The user agent's side, written from the RFCs with plain HMAC (a
    /// one-block HKDF-Expand is `HMAC(PRK, info || 0x01)`).
    fn decrypt(ua_private: &SecretKey, auth: &[u8], body: &[u8]) -> Vec<u8> {
        let (salt, rest) = body.split_at(SALT_LEN);
        let rs = u32::from_be_bytes(rest[..4].try_into().unwrap());
        let idlen = usize::from(rest[4]);
        let (as_public, ciphertext) = rest[5..].split_at(idlen);
        assert_eq!(rs, 4096);
        assert_eq!(idlen, 65);
        assert!(ciphertext.len() <= rs as usize);

        let as_public = PublicKey::from_sec1_bytes(as_public).unwrap();
        let ecdh =
            p256::ecdh::diffie_hellman(ua_private.to_nonzero_scalar(), as_public.as_affine());
        let ua_public = uncompressed(&ua_private.public_key());
        let prk_key = hmac_sha256(auth, &[ecdh.raw_secret_bytes()]);
        let ikm = hmac_sha256(
            &prk_key,
            &[
                b"WebPush: info\0",
                ua_public.as_bytes(),
                uncompressed(&as_public).as_bytes(),
                &[1],
            ],
        );
        let prk = hmac_sha256(salt, &[&ikm]);
        let cek = hmac_sha256(&prk, &[b"Content-Encoding: aes128gcm\0", &[1]]);
        let nonce = hmac_sha256(&prk, &[b"Content-Encoding: nonce\0", &[1]]);

        let cipher = Aes128Gcm::new_from_slice(&cek[..16]).unwrap();
        let mut padded = cipher
            .decrypt(nonce[..12].into(), ciphertext)
            .expect("the record authenticates");
        while padded.last() == Some(&0) {
            padded.pop();
        }
        assert_eq!(padded.pop(), Some(2), "last record delimiter");
        padded
    }

    #[test]
    fn rfc8291_example_encrypts_to_the_published_body() {
        let as_private = secret(AS_PRIVATE);
        assert_eq!(
            encode_base64url(uncompressed(&as_private.public_key()).as_bytes()),
            AS_PUBLIC
        );
        let body =
            encrypt_with(&rfc_keys(), PLAINTEXT.as_bytes(), &rfc_salt(), &as_private).unwrap();
        assert_eq!(encode_base64url(&body), BODY);
    }

    #[test]
    fn rfc8291_example_body_decrypts() {
        let plaintext = decrypt(&secret(UA_PRIVATE), &b64(AUTH_SECRET), &b64(BODY));
        assert_eq!(plaintext, PLAINTEXT.as_bytes());
    }

    fn random_subscription() -> (SecretKey, SubscriptionKeys, Vec<u8>) {
        let ua_private = random_secret_key();
        let mut auth = [0u8; AUTH_LEN];
        rand::rng().fill_bytes(&mut auth);
        let keys = SubscriptionKeys::parse(
            &encode_base64url(uncompressed(&ua_private.public_key()).as_bytes()),
            &encode_base64url(&auth),
        )
        .unwrap();
        (ua_private, keys, auth.to_vec())
    }

    #[test]
    fn encrypt_round_trips_with_fresh_salt_and_key() {
        let (ua_private, keys, auth) = random_subscription();
        let message = br#"{"type":"event","seq":42}"#;
        let first = encrypt(&keys, message).unwrap();
        let second = encrypt(&keys, message).unwrap();
        assert_eq!(first.len(), HEADER_LEN + message.len() + 1 + TAG_LEN);
        assert_ne!(
            first[..HEADER_LEN],
            second[..HEADER_LEN],
            "salt and key are fresh"
        );
        assert_eq!(decrypt(&ua_private, &auth, &first), message);
        assert_eq!(decrypt(&ua_private, &auth, &second), message);
    }

    #[test]
    fn the_largest_plaintext_fills_4096_bytes_and_one_more_is_refused() {
        let (ua_private, keys, auth) = random_subscription();
        let largest = vec![b'x'; MAX_PLAINTEXT];
        let body = encrypt(&keys, &largest).unwrap();
        assert_eq!(body.len(), 4096);
        assert_eq!(decrypt(&ua_private, &auth, &body), largest);
        assert!(encrypt(&keys, &[]).is_ok());
        let err = encrypt(&keys, &vec![b'x'; MAX_PLAINTEXT + 1]).unwrap_err();
        assert!(matches!(
            err,
            PushCryptoError::PlaintextTooLarge {
                len: 3994,
                max: 3993
            }
        ));
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    /// Splits `vapid t=<JWT>, k=<key>`.
    fn split_authorization(header: &str) -> (&str, &str) {
        header
            .strip_prefix("vapid t=")
            .and_then(|rest| rest.split_once(", k="))
            .unwrap()
    }

    #[test]
    fn vapid_public_key_is_the_uncompressed_point() {
        let vapid = Vapid::from_private_base64url(AS_PRIVATE).unwrap();
        assert_eq!(vapid.public_key(), AS_PUBLIC);
        let padded = Vapid::from_private_base64url(&format!("{AS_PRIVATE}=")).unwrap();
        assert_eq!(padded.public_key(), AS_PUBLIC);
    }

    #[test]
    fn vapid_token_verifies_and_carries_the_claims() {
        let vapid = Vapid::from_private_base64url(AS_PRIVATE).unwrap();
        let header = vapid.authorization(
            "https://push.example.net",
            "mailto:ops@example.com",
            1_700_000_000,
        );
        let (jwt, k) = split_authorization(&header);
        assert_eq!(k, AS_PUBLIC);

        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let jose: Value = serde_json::from_slice(&b64(parts[0])).unwrap();
        assert_eq!(jose, json!({"typ": "JWT", "alg": "ES256"}));
        let claims: Value = serde_json::from_slice(&b64(parts[1])).unwrap();
        assert_eq!(
            claims,
            json!({"aud": "https://push.example.net", "exp": 1_700_000_000u64, "sub": "mailto:ops@example.com"})
        );

        let signature = b64(parts[2]);
        assert_eq!(signature.len(), 64);
        let verifying = VerifyingKey::from_sec1_bytes(&b64(k)).unwrap();
        let signing_input = format!("{}.{}", parts[0], parts[1]);
        verifying
            .verify(
                signing_input.as_bytes(),
                &Signature::from_slice(&signature).unwrap(),
            )
            .unwrap();
        let mut tampered = signing_input.into_bytes();
        tampered[0] ^= 1;
        assert!(verifying
            .verify(&tampered, &Signature::from_slice(&signature).unwrap())
            .is_err());
    }

    #[test]
    fn vapid_token_is_accepted_by_a_jwt_library() {
        use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};

        let mut scalar = Zeroizing::new([0u8; PRIVATE_KEY_LEN]);
        scalar.copy_from_slice(&random_secret_key().to_bytes());
        let vapid = Vapid::from_private_base64url(&encode_base64url(scalar.as_slice())).unwrap();
        let exp = now() + 12 * 3600;
        let header = vapid.authorization(
            "https://fcm.googleapis.com",
            "https://example.com/contact",
            exp,
        );
        let (jwt, k) = split_authorization(&header);

        let point = b64(k);
        let key = DecodingKey::from_ec_components(
            &encode_base64url(&point[1..33]),
            &encode_base64url(&point[33..]),
        )
        .unwrap();
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_audience(&["https://fcm.googleapis.com"]);
        validation.set_required_spec_claims(&["aud", "exp", "sub"]);
        let data = decode::<Value>(jwt, &key, &validation).unwrap();
        assert_eq!(data.claims["exp"], exp);
        assert_eq!(data.claims["sub"], "https://example.com/contact");
    }

    #[test]
    fn vapid_private_key_must_be_32_bytes_of_base64url_below_the_order() {
        let short = encode_base64url(&[7u8; 31]);
        let long = encode_base64url(&[7u8; 33]);
        assert!(matches!(
            Vapid::from_private_base64url(&short),
            Err(PushCryptoError::WrongLength {
                expected: 32,
                actual: 31,
                ..
            })
        ));
        assert!(matches!(
            Vapid::from_private_base64url(&long),
            Err(PushCryptoError::WrongLength {
                expected: 32,
                actual: 33,
                ..
            })
        ));
        for text in [
            "not base64!",
            "yfWPiYE+n46HLnH0KqZOF1fJJU3MYrct3AELtAQ/oRw",
            "",
        ] {
            assert!(
                matches!(
                    Vapid::from_private_base64url(text),
                    Err(PushCryptoError::NotBase64url { .. } | PushCryptoError::WrongLength { .. })
                ),
                "{text:?}"
            );
        }
        assert!(matches!(
            Vapid::from_private_base64url("not base64!"),
            Err(PushCryptoError::NotBase64url { .. })
        ));
        for scalar in [[0u8; 32], [0xff; 32]] {
            assert!(matches!(
                Vapid::from_private_base64url(&encode_base64url(&scalar)),
                Err(PushCryptoError::InvalidPrivateKey { .. })
            ));
        }
    }

    #[test]
    fn vapid_debug_shows_no_private_key() {
        let vapid = Vapid::from_private_base64url(AS_PRIVATE).unwrap();
        let debug = format!("{vapid:?}");
        assert!(!debug.contains(AS_PRIVATE), "{debug}");
        let hex: String = b64(AS_PRIVATE).iter().map(|b| format!("{b:02x}")).collect();
        assert!(
            !debug.contains(&hex[..8]),
            "no hex of the scalar either: {debug}"
        );
        assert!(debug.contains(AS_PUBLIC), "{debug}");
    }

    #[test]
    fn subscription_keys_accept_padded_and_unpadded_base64url() {
        assert!(
            SubscriptionKeys::parse(&format!("{UA_PUBLIC}="), &format!("{AUTH_SECRET}==")).is_ok()
        );
        assert!(SubscriptionKeys::parse(UA_PUBLIC, AUTH_SECRET).is_ok());
    }

    #[test]
    fn subscription_keys_refuse_a_64_byte_key() {
        let short = encode_base64url(&b64(UA_PUBLIC)[..64]);
        let err = SubscriptionKeys::parse(&short, AUTH_SECRET).unwrap_err();
        assert!(matches!(
            err,
            PushCryptoError::WrongLength {
                field: "p256dh",
                expected: 65,
                actual: 64
            }
        ));
        assert_eq!(err.to_string(), "p256dh is 64 bytes, expected 65");
    }

    #[test]
    fn subscription_keys_refuse_a_point_off_the_curve() {
        let mut point = b64(UA_PUBLIC);
        point[64] ^= 1;
        let off_curve = encode_base64url(&point);
        let err = SubscriptionKeys::parse(&off_curve, AUTH_SECRET).unwrap_err();
        assert!(matches!(
            err,
            PushCryptoError::NotOnCurve { field: "p256dh" }
        ));
        assert!(!err.to_string().contains(&off_curve));
    }

    #[test]
    fn subscription_keys_refuse_a_compressed_or_mistagged_point() {
        let point = b64(UA_PUBLIC);
        let mut compressed = vec![0x02 | (point[64] & 1)];
        compressed.extend_from_slice(&point[1..33]);
        assert!(matches!(
            SubscriptionKeys::parse(&encode_base64url(&compressed), AUTH_SECRET),
            Err(PushCryptoError::WrongLength { actual: 33, .. })
        ));
        let mut mistagged = point.clone();
        mistagged[0] = 0x06;
        assert!(matches!(
            SubscriptionKeys::parse(&encode_base64url(&mistagged), AUTH_SECRET),
            Err(PushCryptoError::NotUncompressed { .. })
        ));
    }

    #[test]
    fn subscription_keys_refuse_a_15_byte_auth() {
        let auth = encode_base64url(&b64(AUTH_SECRET)[..15]);
        assert!(matches!(
            SubscriptionKeys::parse(UA_PUBLIC, &auth),
            Err(PushCryptoError::WrongLength {
                field: "auth",
                expected: 16,
                actual: 15
            })
        ));
        assert!(matches!(
            SubscriptionKeys::parse(UA_PUBLIC, "BTBZMqHH6r4Tts7J/aSIgg"),
            Err(PushCryptoError::NotBase64url { field: "auth" })
        ));
    }
}
