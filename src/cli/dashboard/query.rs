//! A URL query string's `key=value` pairs, percent-decoded (axum's `Query` would bring
//! serde_urlencoded for the three parameters Browse takes).

/// The pairs of `raw` in order; a key without `=` has an empty value. Bad escapes are kept
/// as they are, bytes that are not UTF-8 are replaced.
pub fn parse(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key), decode(value))
        })
        .collect()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes.get(i..i + 3) {
            Some([b'%', high, low]) => hex_digit(*high).zip(hex_digit(*low)).map(|(h, l)| h << 4 | l),
            _ => None,
        };
        match (escaped, bytes[i]) {
            (Some(byte), _) => {
                out.push(byte);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, byte) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_digit(byte: u8) -> Option<u8> {
    (byte as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_split_and_decoded() {
        let pairs = parse("from=timestamp%3A1700000000000&partition=2&limit=&flag&x=a+b%2Fc");
        assert_eq!(
            pairs,
            vec![
                ("from".into(), "timestamp:1700000000000".into()),
                ("partition".into(), "2".into()),
                ("limit".into(), String::new()),
                ("flag".into(), String::new()),
                ("x".into(), "a b/c".into()),
            ]
        );
    }

    #[test]
    fn bad_escapes_are_kept() {
        assert_eq!(parse("a=%zz&b=%4"), vec![("a".into(), "%zz".into()), ("b".into(), "%4".into())]);
        assert_eq!(parse("a=%e2%82%ac"), vec![("a".into(), "€".into())]);
        assert_eq!(parse(""), Vec::<(String, String)>::new());
    }
}
