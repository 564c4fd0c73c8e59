//! The user in an X.509 client certificate, as `CommonNameUserConversion` builds it (reference 2.3).
//! Chain verification is not done here: Envoy's downstream TLS verifies the chain, and the filter
//! only accepts a certificate whose digest matches the connection's verified peer certificate.
//!
//! Subject attribute values are read as Go's `crypto/x509` reads them (`parseASN1String`): UTF8String,
//! PrintableString (with `*` and `&` tolerated), IA5String, NumericString, T61String and BMPString.
//! Go refuses a certificate whose subject holds any other value type, or a string that is invalid for
//! its type, so such a certificate is an error here too. As in Go's `pkix.Name`, the last CN wins and
//! every O is kept, in order.
//!
//! The certificate is read with the `der` crate's decoders, to the structure of RFC 5280 as
//! `x509-cert` 0.2 declares it (`Certificate::from_der`), every field decoded and checked as that
//! crate's derived code does (the same `der` primitives: tags, lengths, OIDs, integers, times, bit
//! strings, booleans; `SET OF` in DER order), without its nested generic types: they were 62 KB of
//! the filter's module (docs/PERFORMANCE.md "Module size"). The test module `reference` below holds
//! the two readers to the same answer on generated and mutated certificates (x509-cert stays a
//! dev-dependency for it).

use der::asn1::{
    AnyRef, BitStringRef, ContextSpecific, GeneralizedTime, ObjectIdentifier, OctetStringRef,
    UtcTime,
};
use der::{Decode as _, DecodeValue as _, Reader as _, SliceReader, Tag, TagNumber, Tagged as _};

use crate::identity::{UserInfo, CREDENTIAL_ID_EXTRA};
use crate::kubelet::KubeletModel;

/// Why a certificate could not be turned into a user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum X509Error {
    /// The bytes are not a DER certificate.
    #[error("client certificate is not valid DER: {0}")]
    Der(String),
    /// The PEM text could not be decoded.
    #[error("client certificate is not valid PEM: {0}")]
    Pem(String),
    /// More than one UID attribute, a non-string UID or an empty UID (1.33+).
    #[error("{0}")]
    Uid(String),
}

/// `commonName` (2.5.4.3).
pub const CN_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
/// `organizationName` (2.5.4.10).
pub const O_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.10");
/// The subject attribute Kubernetes reads the user's UID from: `asn1util.X509UID()` in
/// `k8s.io/apiserver`, `1.3.6.1.4.1.57683.2`. (The reference's 0.9.2342.19200300.100.1.1 is the
/// LDAP `uid` attribute, which the kubelet does not read; see the tests.)
pub const UID_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57683.2");

/// The first kubelet minor version that adds the `credential-id` extra.
pub const CREDENTIAL_ID_SINCE_MINOR: u32 = 32;
/// The first kubelet minor version that reads the UID attribute (`AllowParsingUserUIDFromCertAuth`,
/// beta and on by default from 1.33; it can be turned off: [`KubeletModel::reads_cert_uid`]).
pub const UID_SINCE_MINOR: u32 = crate::kubelet::CERT_UID_SINCE_MINOR;

/// The PEM label of a certificate block.
const PEM_BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const PEM_END: &str = "-----END CERTIFICATE-----";

/// Hex (lower-case) SHA-256 of DER bytes, as Envoy's `Hash=` and the credential id use it.
pub fn sha256_hex(der: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(der))
}

/// Decode one PEM `CERTIFICATE` block into DER. Only white space may surround the block; the
/// base64 body may be wrapped at any width (white space inside it is ignored) and must be padded.
///
/// The block is split here rather than by a PEM crate on purpose: x509-cert's decoder
/// (`pem-rfc7468`) takes only 64-column lines, and the `pem` crate skips text before the block and
/// reads RFC 1421 headers, both refused here. The base64 is the `base64` crate's.
pub fn pem_to_der(pem: &str) -> Result<Vec<u8>, X509Error> {
    use base64::Engine as _;
    let text = pem.trim();
    let Some(rest) = text.strip_prefix(PEM_BEGIN) else {
        return Err(X509Error::Pem(
            "expected `-----BEGIN CERTIFICATE-----` at the start".into(),
        ));
    };
    let Some(body) = rest.strip_suffix(PEM_END) else {
        return Err(X509Error::Pem(
            "expected `-----END CERTIFICATE-----` at the end".into(),
        ));
    };
    if body.contains("-----") {
        return Err(X509Error::Pem("more than one PEM block".into()));
    }
    if body.contains(':') {
        return Err(X509Error::Pem("PEM headers are not supported".into()));
    }
    let compact: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if compact.is_empty() {
        return Err(X509Error::Pem("empty PEM block".into()));
    }
    base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|e| X509Error::Pem(format!("bad base64: {e}")))
}

/// A subject attribute value as Go's `parseASN1String` reads it; `Err` with Go's reason otherwise.
fn asn1_string(tag: Tag, value: &[u8]) -> Result<String, String> {
    match tag {
        Tag::Utf8String => std::str::from_utf8(value)
            .map(str::to_owned)
            .map_err(|_| "invalid UTF-8 string".to_string()),
        Tag::PrintableString => {
            if value.iter().all(|&b| is_printable(b)) {
                Ok(value.iter().map(|&b| char::from(b)).collect())
            } else {
                Err("invalid PrintableString".into())
            }
        }
        Tag::Ia5String => {
            if value.is_ascii() {
                Ok(value.iter().map(|&b| char::from(b)).collect())
            } else {
                Err("invalid IA5String".into())
            }
        }
        Tag::NumericString => {
            if value.iter().all(|&b| b.is_ascii_digit() || b == b' ') {
                Ok(value.iter().map(|&b| char::from(b)).collect())
            } else {
                Err("invalid NumericString".into())
            }
        }
        // Current Go reads T61String as Latin-1, each byte one code point (as BoringSSL does).
        Tag::TeletexString => Ok(value.iter().map(|&b| char::from(b)).collect()),
        Tag::BmpString => {
            if value.len() % 2 != 0 {
                return Err("invalid BMPString".into());
            }
            let value = value.strip_suffix(&[0, 0]).unwrap_or(value);
            let units = value
                .chunks_exact(2)
                .map(|c| c.iter().fold(0u16, |acc, &b| (acc << 8) | u16::from(b)));
            Ok(char::decode_utf16(units)
                .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
                .collect())
        }
        other => Err(format!("unsupported string type: {other}")),
    }
}

/// Go's `isPrintable` for PrintableString, which tolerates `*` and `&`.
fn is_printable(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || (b'\''..=b')').contains(&b)
        || (b'+'..=b'/').contains(&b)
        || matches!(b, b' ' | b':' | b'=' | b'?' | b'*' | b'&')
}

/// One attribute of a subject: `AttributeTypeAndValue ::= SEQUENCE { type OID, value ANY }`.
struct Attribute<'a> {
    oid: ObjectIdentifier,
    value: AnyRef<'a>,
    /// The whole encoding: the `SET OF` order and duplicate check compare it.
    encoding: &'a [u8],
}

/// The contents of the next element, which must have tag `tag`, as a reader of its own (every
/// reader here is a `SliceReader`, so each `der` decoder is instantiated once).
fn nested<'a>(reader: &mut SliceReader<'a>, tag: Tag) -> der::Result<SliceReader<'a>> {
    let any = AnyRef::decode(reader)?;
    any.tag().assert_eq(tag)?;
    SliceReader::new(any.value())
}

/// `AlgorithmIdentifier ::= SEQUENCE { algorithm OID, parameters ANY OPTIONAL }`.
fn algorithm_identifier(reader: &mut SliceReader<'_>) -> der::Result<()> {
    let mut r = nested(reader, Tag::Sequence)?;
    ObjectIdentifier::decode(&mut r)?;
    Option::<AnyRef<'_>>::decode(&mut r)?;
    r.finish(())
}

/// `Time ::= CHOICE { utcTime UTCTime, generalTime GeneralizedTime }`.
fn time(reader: &mut SliceReader<'_>) -> der::Result<()> {
    match reader.peek_tag()? {
        Tag::UtcTime => UtcTime::decode(reader).map(drop),
        Tag::GeneralizedTime => GeneralizedTime::decode(reader).map(drop),
        tag => Err(tag.unexpected_error(None)),
    }
}

/// `Name ::= SEQUENCE OF RelativeDistinguishedName`, each a `SET OF AttributeTypeAndValue`:
/// the attributes of each RDN sorted in DER order (a duplicate is an error), as `SetOfVec` does.
fn name<'a>(reader: &mut SliceReader<'a>) -> der::Result<Vec<Vec<Attribute<'a>>>> {
    let mut rdns = nested(reader, Tag::Sequence)?;
    let mut out = Vec::new();
    while !rdns.is_finished() {
        let mut set = nested(&mut rdns, Tag::Set)?;
        let mut rdn: Vec<Attribute<'a>> = Vec::new();
        while !set.is_finished() {
            let encoding = set.tlv_bytes()?;
            let mut r = SliceReader::new(encoding)?;
            let mut atv = nested(&mut r, Tag::Sequence)?;
            let oid = ObjectIdentifier::decode(&mut atv)?;
            let value = AnyRef::decode(&mut atv)?;
            atv.finish(())?;
            r.finish(())?;
            rdn.push(Attribute {
                oid,
                value,
                encoding,
            });
        }
        set.finish(())?;
        rdn.sort_by(|a, b| a.encoding.cmp(b.encoding));
        if rdn
            .windows(2)
            .any(|w| matches!(w, [a, b] if a.encoding == b.encoding))
        {
            return Err(der::ErrorKind::SetDuplicate.into());
        }
        out.push(rdn);
    }
    rdns.finish(out)
}

/// An optional `[number]` field of `TBSCertificate`, as `der`'s `ContextSpecific` finds it: other
/// context-specific fields with lower numbers before it are skipped.
fn context_field<'a, T>(
    reader: &mut SliceReader<'a>,
    number: TagNumber,
    read: impl FnOnce(&mut SliceReader<'a>) -> der::Result<T>,
) -> der::Result<Option<T>> {
    while let Some(octet) = reader.peek_byte() {
        let tag = Tag::try_from(octet)?;
        if !tag.is_context_specific() || tag.number() > number {
            break;
        } else if tag.number() == number {
            return read(reader).map(Some);
        }
        AnyRef::decode(reader)?;
    }
    Ok(None)
}

/// `[n] IMPLICIT BIT STRING` (`issuerUniqueID`, `subjectUniqueID`).
fn implicit_bit_string(reader: &mut SliceReader<'_>) -> der::Result<()> {
    let any = AnyRef::decode(reader)?;
    if any.tag().is_constructed() {
        return Err(any.tag().non_canonical_error());
    }
    let mut r = SliceReader::new(any.value())?;
    let header = der::Header {
        tag: Tag::BitString,
        length: der::Length::try_from(any.value().len())?,
    };
    BitStringRef::decode_value(&mut r, header)?;
    r.finish(())
}

/// `Extension ::= SEQUENCE { extnID OID, critical BOOLEAN DEFAULT FALSE, extnValue OCTET STRING }`,
/// in a `SEQUENCE OF`.
fn extensions(list: AnyRef<'_>) -> der::Result<()> {
    list.tag().assert_eq(Tag::Sequence)?;
    let mut list = SliceReader::new(list.value())?;
    while !list.is_finished() {
        let mut ext = nested(&mut list, Tag::Sequence)?;
        ObjectIdentifier::decode(&mut ext)?;
        Option::<bool>::decode(&mut ext)?;
        OctetStringRef::decode(&mut ext)?;
        ext.finish(())?;
    }
    list.finish(())
}

/// The subject of a DER certificate, every field of `Certificate` decoded and checked.
fn certificate_subject(der: &[u8]) -> der::Result<Vec<Vec<Attribute<'_>>>> {
    let mut reader = SliceReader::new(der)?;
    let mut cert = nested(&mut reader, Tag::Sequence)?;
    let mut tbs = nested(&mut cert, Tag::Sequence)?;
    // version [0] EXPLICIT Version DEFAULT v1: v1(0), v2(1), v3(2).
    if let Some(version) =
        ContextSpecific::<u8>::decode_explicit(&mut tbs, TagNumber::N0)?.map(|cs| cs.value)
    {
        if version > 2 {
            return Err(Tag::Integer.value_error());
        }
    }
    // serialNumber: an INTEGER of at most 20 octets (21 with a leading zero: x509-cert's RFC 5280
    // profile reads the limit as the value's, before encoding).
    let serial = der::asn1::IntRef::decode(&mut tbs)?;
    if serial.len() > der::Length::new(21) {
        return Err(Tag::Integer.value_error());
    }
    algorithm_identifier(&mut tbs)?;
    name(&mut tbs)?;
    let mut validity = nested(&mut tbs, Tag::Sequence)?;
    time(&mut validity)?;
    time(&mut validity)?;
    validity.finish(())?;
    let subject = name(&mut tbs)?;
    let mut spki = nested(&mut tbs, Tag::Sequence)?;
    algorithm_identifier(&mut spki)?;
    BitStringRef::decode(&mut spki)?;
    spki.finish(())?;
    context_field(&mut tbs, TagNumber::N1, implicit_bit_string)?;
    context_field(&mut tbs, TagNumber::N2, implicit_bit_string)?;
    context_field(&mut tbs, TagNumber::N3, |r| {
        extensions(ContextSpecific::<AnyRef<'_>>::decode(r)?.value)
    })?;
    tbs.finish(())?;
    algorithm_identifier(&mut cert)?;
    BitStringRef::decode(&mut cert)?;
    cert.finish(())?;
    reader.finish(subject)
}

/// The user for a verified leaf certificate (DER): `Ok(None)` when the CN is empty.
/// - name = subject CN; groups = every O, in order;
/// - extra `authentication.kubernetes.io/credential-id` = [`X509SHA256=<hex>`] from 1.32;
/// - uid from the subject UID attribute ([`UID_OID`]) from 1.33 while the gate
///   `AllowParsingUserUIDFromCertAuth` is on (its default), else "". More than one UID, a
///   non-string UID or an empty UID is then an error.
///
/// `model` is a kubelet version (its gates at their defaults) or a [`KubeletModel`].
pub fn user_from_der(
    der: &[u8],
    model: impl Into<KubeletModel>,
) -> Result<Option<UserInfo>, X509Error> {
    let model: KubeletModel = model.into();
    let version = model.version();
    let subject = certificate_subject(der).map_err(|e| X509Error::Der(e.to_string()))?;
    let reads_uid = model.reads_cert_uid();
    let mut common_name = String::new();
    let mut groups = Vec::new();
    let mut uids = Vec::new();
    for rdn in &subject {
        for atv in rdn {
            let text = match asn1_string(atv.value.tag(), atv.value.value()) {
                Ok(text) => text,
                Err(_) if reads_uid && atv.oid == UID_OID => {
                    return Err(X509Error::Uid("unable to parse UID into a string".into()));
                }
                Err(why) => {
                    return Err(X509Error::Der(format!(
                        "invalid RDNSequence: invalid attribute value: {why}"
                    )));
                }
            };
            if atv.oid == CN_OID {
                common_name = text;
            } else if atv.oid == O_OID {
                groups.push(text);
            } else if atv.oid == UID_OID {
                uids.push(text);
            }
        }
    }
    if common_name.is_empty() {
        return Ok(None);
    }
    let mut user = UserInfo {
        name: common_name,
        groups,
        ..UserInfo::default()
    };
    if version.minor() >= CREDENTIAL_ID_SINCE_MINOR {
        user.extra.insert(
            CREDENTIAL_ID_EXTRA.to_string(),
            vec![format!("X509SHA256={}", sha256_hex(der))],
        );
    }
    if reads_uid {
        match uids.as_slice() {
            [] => {}
            [uid] if uid.is_empty() => {
                return Err(X509Error::Uid("UID cannot be an empty string".into()));
            }
            [uid] => user.uid.clone_from(uid),
            many => {
                return Err(X509Error::Uid(format!(
                    "expected 1 UID, but found multiple: [{}]",
                    many.join(" ")
                )));
            }
        }
    }
    Ok(Some(user))
}

/// The reader against `x509-cert`'s `Certificate::from_der` (the reader it replaced), on
/// generated certificates and on every one-byte mutation, deletion, insertion and truncation of
/// them: the same certificates are refused, and the same subjects read, RDN by RDN.
#[cfg(test)]
mod reference {
    use super::*;
    use der::asn1::{Any, SetOfVec};
    use der::Encode as _;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
    use x509_cert::attr::AttributeTypeAndValue;
    use x509_cert::name::RelativeDistinguishedName;
    use x509_cert::Certificate;

    type Subject = Vec<Vec<(String, Tag, Vec<u8>)>>;

    fn ours(der: &[u8]) -> Option<Subject> {
        let rdns = certificate_subject(der).ok()?;
        Some(
            rdns.iter()
                .map(|rdn| {
                    rdn.iter()
                        .map(|a| (a.oid.to_string(), a.value.tag(), a.value.value().to_vec()))
                        .collect()
                })
                .collect(),
        )
    }

    fn theirs(der: &[u8]) -> Option<Subject> {
        let cert = Certificate::from_der(der).ok()?;
        Some(
            cert.tbs_certificate
                .subject
                .0
                .iter()
                .map(|rdn| {
                    rdn.0
                        .iter()
                        .map(|a| (a.oid.to_string(), a.value.tag(), a.value.value().to_vec()))
                        .collect()
                })
                .collect(),
        )
    }

    fn certificates() -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let key = KeyPair::generate().unwrap();
        // CN and O; with SANs, key usages and a CA constraint (extensions, some critical).
        let mut params = CertificateParams::new(vec!["node-1.example".to_string()]).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "system:node:node-1");
        dn.push(DnType::OrganizationName, "system:nodes");
        dn.push(
            DnType::CustomDnType(vec![1, 3, 6, 1, 4, 1, 57683, 2]),
            "uid-1",
        );
        params.distinguished_name = dn;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        let cert = params.self_signed(&key).unwrap().der().to_vec();
        out.push(cert.clone());
        // No extensions at all, an empty subject.
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = DistinguishedName::new();
        out.push(params.self_signed(&key).unwrap().der().to_vec());
        // A multi-valued RDN (three attributes in one SET, DER-sorted) and a second RDN.
        let mut c = Certificate::from_der(&cert).unwrap();
        let atv = |oid: &str, tag: Tag, v: &[u8]| AttributeTypeAndValue {
            oid: ObjectIdentifier::new(oid).unwrap(),
            value: Any::new(tag, v.to_vec()).unwrap(),
        };
        let multi = SetOfVec::try_from(vec![
            atv("2.5.4.3", Tag::Utf8String, b"carol"),
            atv("2.5.4.10", Tag::PrintableString, b"ops"),
            atv("2.5.4.10", Tag::Utf8String, b"dev"),
        ])
        .unwrap();
        c.tbs_certificate.subject.0 = vec![
            RelativeDistinguishedName(multi),
            RelativeDistinguishedName(
                SetOfVec::try_from(vec![atv("2.5.4.6", Tag::PrintableString, b"DE")]).unwrap(),
            ),
        ];
        out.push(c.to_der().unwrap());
        out
    }

    #[test]
    fn reads_as_x509_cert_on_every_small_mutation() {
        let mut cases = 0usize;
        let mut accepted = 0usize;
        for cert in certificates() {
            let mut variants = vec![cert.clone()];
            for i in 0..cert.len() {
                for f in [
                    |b: u8| b ^ 0xff,
                    |_| 0,
                    |b: u8| b.wrapping_add(1),
                    |b: u8| b.wrapping_sub(1),
                    |b: u8| b ^ 0x20,
                ] {
                    let mut m = cert.clone();
                    m[i] = f(m[i]);
                    variants.push(m);
                }
                let mut m = cert.clone();
                m.remove(i);
                variants.push(m);
                let mut m = cert.clone();
                m.insert(i, 0);
                variants.push(m);
                variants.push(cert[..i].to_vec());
            }
            for v in variants {
                let (a, b) = (ours(&v), theirs(&v));
                assert_eq!(a, b, "certificate {}", hex::encode(&v));
                cases += 1;
                accepted += usize::from(a.is_some());
            }
        }
        assert!(
            cases > 5_000 && accepted > 500,
            "{cases} cases, {accepted} accepted"
        );
    }
}
