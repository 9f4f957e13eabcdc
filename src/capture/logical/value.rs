//! Conversion of Postgres text-format column values to JSON.
//!
//! rowcast captures row changes two ways: database triggers that serialise
//! rows with `to_jsonb()`, and the logical replication stream, which carries
//! each column in its type's text output format. Subscribers must not be able
//! to tell the paths apart, so [`text_to_json`] reproduces, for one column,
//! the JSON value that `to_jsonb()` gives once parsed by `serde_json`.
//!
//! Both paths are assumed to run with the server defaults `DateStyle = ISO`,
//! `IntervalStyle = postgres` and `extra_float_digits = 1`, and with the same
//! `TimeZone`. Types whose `to_jsonb()` form depends on catalog information
//! the text alone lacks (composite types, domains over numbers, types with a
//! cast to `json`) come out as the JSON string of their text.

use serde_json::{Map, Value};

/// `bool`.
const BOOL: u32 = 16;
/// `int8`.
const INT8: u32 = 20;
/// `int2`.
const INT2: u32 = 21;
/// `int2vector`, a space-separated list that `to_jsonb()` treats as an array.
const INT2VECTOR: u32 = 22;
/// `int4`.
const INT4: u32 = 23;
/// `oid`.
const OID: u32 = 26;
/// `oidvector`, a space-separated list that `to_jsonb()` treats as an array.
const OIDVECTOR: u32 = 30;
/// `json`.
const JSON: u32 = 114;
/// `float4`.
const FLOAT4: u32 = 700;
/// `float8`.
const FLOAT8: u32 = 701;
/// `timestamp`.
const TIMESTAMP: u32 = 1114;
/// `timestamptz`.
const TIMESTAMPTZ: u32 = 1184;
/// `numeric`.
const NUMERIC: u32 = 1700;
/// `jsonb`.
const JSONB: u32 = 3802;

/// Built-in array types as `(array OID, element OID)`, sorted by array OID.
/// Only types whose text format uses `,` between elements are listed, which
/// leaves out `_box`.
const ARRAY_ELEMENTS: &[(u32, u32)] = &[
    (143, 142),          // _xml
    (199, JSON),         // _json
    (271, 5069),         // _xid8
    (629, 628),          // _line
    (651, 650),          // _cidr
    (719, 718),          // _circle
    (775, 774),          // _macaddr8
    (791, 790),          // _money
    (1000, BOOL),        // _bool
    (1001, 17),          // _bytea
    (1002, 18),          // _char
    (1003, 19),          // _name
    (1005, INT2),        // _int2
    (1006, INT2VECTOR),  // _int2vector
    (1007, INT4),        // _int4
    (1008, 24),          // _regproc
    (1009, 25),          // _text
    (1010, 27),          // _tid
    (1011, 28),          // _xid
    (1012, 29),          // _cid
    (1013, OIDVECTOR),   // _oidvector
    (1014, 1042),        // _bpchar
    (1015, 1043),        // _varchar
    (1016, INT8),        // _int8
    (1017, 600),         // _point
    (1018, 601),         // _lseg
    (1019, 602),         // _path
    (1021, FLOAT4),      // _float4
    (1022, FLOAT8),      // _float8
    (1027, 604),         // _polygon
    (1028, OID),         // _oid
    (1034, 1033),        // _aclitem
    (1040, 829),         // _macaddr
    (1041, 869),         // _inet
    (1115, TIMESTAMP),   // _timestamp
    (1182, 1082),        // _date
    (1183, 1083),        // _time
    (1185, TIMESTAMPTZ), // _timestamptz
    (1187, 1186),        // _interval
    (1231, NUMERIC),     // _numeric
    (1270, 1266),        // _timetz
    (1561, 1560),        // _bit
    (1563, 1562),        // _varbit
    (2201, 1790),        // _refcursor
    (2207, 2202),        // _regprocedure
    (2208, 2203),        // _regoper
    (2209, 2204),        // _regoperator
    (2210, 2205),        // _regclass
    (2211, 2206),        // _regtype
    (2949, 2970),        // _txid_snapshot
    (2951, 2950),        // _uuid
    (3221, 3220),        // _pg_lsn
    (3643, 3614),        // _tsvector
    (3645, 3615),        // _tsquery
    (3735, 3734),        // _regconfig
    (3770, 3769),        // _regdictionary
    (3807, JSONB),       // _jsonb
    (3905, 3904),        // _int4range
    (3907, 3906),        // _numrange
    (3909, 3908),        // _tsrange
    (3911, 3910),        // _tstzrange
    (3913, 3912),        // _daterange
    (3927, 3926),        // _int8range
    (4073, 4072),        // _jsonpath
    (4090, 4089),        // _regnamespace
    (4097, 4096),        // _regrole
    (4192, 4191),        // _regcollation
    (5039, 5038),        // _pg_snapshot
    (6150, 4451),        // _int4multirange
    (6151, 4532),        // _nummultirange
    (6152, 4533),        // _tsmultirange
    (6153, 4534),        // _tstzmultirange
    (6155, 4535),        // _datemultirange
    (6157, 4536),        // _int8multirange
];

/// Most array dimensions Postgres allows (`MAXDIM`).
const MAX_ARRAY_DIMENSIONS: usize = 6;

/// Largest decimal exponent expanded when normalising a number; beyond it
/// the value is far outside the `f64` range anyway.
const MAX_EXPONENT: u64 = 100_000;

/// Converts one column value in Postgres text output format to the JSON value
/// `to_jsonb()` would give.
///
/// The result equals what `serde_json` reads from the `to_jsonb()` output of
/// the same value, which is what the trigger path holds. Numbers (`int2`,
/// `int4`, `int8`, `float4`, `float8`, `numeric`) go through the decimal
/// text `to_jsonb()` prints, so `1e+300` and `1.5e-07` from a `float8`
/// become the same JSON numbers as there.
///
/// Precision caveat: a JSON number here holds a `u64`, an `i64` or an `f64`,
/// so a `numeric` with more than about 17 significant digits loses
/// precision, trailing fractional zeros are not kept (`1.50` prints as
/// `1.5`), and a number beyond the `f64` range becomes the JSON string of its
/// text. `NaN` and the infinities, which JSON cannot express, become strings
/// exactly as in `to_jsonb()`.
///
/// `json` values are normalised the way `jsonb` stores them: numbers in
/// decimal form, duplicate keys reduced to the last one, and keys ordered by
/// length and then bytewise. Timestamps take the ISO 8601 form `to_jsonb()`
/// uses. Arrays of built-in types become JSON arrays (nested for several
/// dimensions, explicit bounds dropped) with each element converted by its
/// own type. Every other type, `oid` included, and any text that does not
/// parse as expected, becomes the JSON string of the text unchanged.
pub(crate) fn text_to_json(type_oid: u32, text: &str) -> Value {
    match type_oid {
        BOOL => bool_to_json(text),
        INT2 | INT4 | INT8 | FLOAT4 | FLOAT8 | NUMERIC => number_to_json(text),
        JSON | JSONB => json_to_json(text),
        TIMESTAMP => Value::String(timestamp_to_iso(text)),
        TIMESTAMPTZ => Value::String(timestamptz_to_iso(text)),
        INT2VECTOR => vector_to_json(INT2, text),
        OIDVECTOR => vector_to_json(OID, text),
        _ => match element_type(type_oid) {
            Some(element_oid) => array_to_json(element_oid, text),
            None => Value::String(text.to_owned()),
        },
    }
}

/// Element type of a built-in array type, or `None` for any other type.
pub(crate) fn element_type(array_oid: u32) -> Option<u32> {
    ARRAY_ELEMENTS
        .binary_search_by_key(&array_oid, |(array, _)| *array)
        .ok()
        .and_then(|at| ARRAY_ELEMENTS.get(at))
        .map(|(_, element)| *element)
}

fn bool_to_json(text: &str) -> Value {
    match text {
        "t" => Value::Bool(true),
        "f" => Value::Bool(false),
        _ => Value::String(text.to_owned()),
    }
}

/// Converts an integer, float or numeric text the way `to_jsonb()` does: a
/// valid JSON number is rewritten to the decimal form of `numeric` and
/// parsed; anything else stays a string.
fn number_to_json(text: &str) -> Value {
    let number = numeric_form(text).and_then(|decimal| serde_json::from_str(&decimal).ok());
    match number {
        Some(number @ Value::Number(_)) => number,
        _ => Value::String(text.to_owned()),
    }
}

/// Whether `text` matches the JSON number grammar
/// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
fn is_json_number(text: &str) -> bool {
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((mantissa, exponent)) => (mantissa, Some(exponent)),
        None => (unsigned, None),
    };
    let (integer, fraction) = match mantissa.split_once('.') {
        Some((integer, fraction)) => (integer, Some(fraction)),
        None => (mantissa, None),
    };
    let integer_ok = integer == "0" || (is_digits(integer) && !integer.starts_with('0'));
    let fraction_ok = fraction.is_none_or(is_digits);
    let exponent_ok = exponent.is_none_or(|exponent| {
        let digits = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
        is_digits(digits)
    });
    integer_ok && fraction_ok && exponent_ok
}

fn is_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit())
}

/// Rewrites a JSON number the way Postgres `numeric` input and output do:
/// no exponent, as many fractional digits as the text implied (`1.50e1` is
/// `15.0`), no sign on zero. `None` when the text is not a JSON number or
/// its exponent is absurdly large.
fn numeric_form(text: &str) -> Option<String> {
    if !is_json_number(text) {
        return None;
    }
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(unsigned) => (true, unsigned),
        None => (false, text),
    };
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((mantissa, exponent)) => (mantissa, exponent.parse::<i64>().ok()?),
        None => (unsigned, 0),
    };
    if exponent.unsigned_abs() > MAX_EXPONENT {
        return None;
    }
    let (integer, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits: Vec<char> = integer.chars().chain(fraction.chars()).collect();
    let point = i64::try_from(integer.len()).ok()? + exponent;
    let scale = usize::try_from(i64::try_from(fraction.len()).ok()? - exponent).unwrap_or(0);
    let whole = whole_digits(&digits, point);
    let fractional = fractional_digits(&digits, point, scale);
    let is_zero = digits.iter().all(|digit| *digit == '0');
    let sign = if negative && !is_zero { "-" } else { "" };
    Some(match scale {
        0 => format!("{sign}{whole}"),
        _ => format!("{sign}{whole}.{fractional}"),
    })
}

/// Digits before the decimal point at `point`, without leading zeros.
fn whole_digits(digits: &[char], point: i64) -> String {
    let point = usize::try_from(point).unwrap_or(0);
    let padding = point.saturating_sub(digits.len());
    let whole: String = digits
        .iter()
        .take(point)
        .copied()
        .chain(std::iter::repeat_n('0', padding))
        .skip_while(|digit| *digit == '0')
        .collect();
    if whole.is_empty() {
        String::from("0")
    } else {
        whole
    }
}

/// The first `scale` digits after the decimal point at `point`.
fn fractional_digits(digits: &[char], point: i64, scale: usize) -> String {
    let leading_zeros = usize::try_from(-point).unwrap_or(0);
    let skipped = usize::try_from(point).unwrap_or(0);
    std::iter::repeat_n('0', leading_zeros)
        .chain(digits.iter().skip(skipped).copied())
        .chain(std::iter::repeat('0'))
        .take(scale)
        .collect()
}

/// Parses `json` or `jsonb` text into the value `jsonb` would hold, falling
/// back to a string when the text is not JSON `serde_json` accepts.
fn json_to_json(text: &str) -> Value {
    match serde_json::from_str::<Value>(&normalize_json_numbers(text)) {
        Ok(value) => order_like_jsonb(value),
        Err(_) => Value::String(text.to_owned()),
    }
}

/// Rewrites every number outside string literals in JSON text to its
/// `numeric` decimal form, as storing the text as `jsonb` would.
fn normalize_json_numbers(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '"' {
            out.push(c);
            copy_string_literal(&mut chars, &mut out);
        } else if c == '-' || c.is_ascii_digit() {
            let mut token = String::from(c);
            while let Some(next) = chars.next_if(|next| is_number_char(*next)) {
                token.push(next);
            }
            out.push_str(numeric_form(&token).as_deref().unwrap_or(&token));
        } else {
            out.push(c);
        }
    }
    out
}

fn is_number_char(c: char) -> bool {
    c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-')
}

/// Copies the rest of a JSON string literal, through its closing quote.
fn copy_string_literal(chars: &mut impl Iterator<Item = char>, out: &mut String) {
    while let Some(c) = chars.next() {
        out.push(c);
        match c {
            '\\' => out.extend(chars.next()),
            '"' => return,
            _ => {}
        }
    }
}

/// Orders object keys the way `jsonb` prints them, shorter keys first and
/// equal lengths bytewise, at every level.
fn order_like_jsonb(value: Value) -> Value {
    match value {
        Value::Object(object) => {
            let mut entries: Vec<(String, Value)> = object.into_iter().collect();
            entries.sort_by(|(a, _), (b, _)| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
            let ordered: Map<String, Value> = entries
                .into_iter()
                .map(|(key, value)| (key, order_like_jsonb(value)))
                .collect();
            Value::Object(ordered)
        }
        Value::Array(items) => Value::Array(items.into_iter().map(order_like_jsonb).collect()),
        other => other,
    }
}

/// `2026-11-25 19:08:16.5` → `2026-11-25T19:08:16.5`; `infinity` and
/// `-infinity` have no space and stay as they are, and a ` BC` suffix stays.
fn timestamp_to_iso(text: &str) -> String {
    match text.split_once(' ') {
        Some((date, rest)) => format!("{date}T{rest}"),
        None => text.to_owned(),
    }
}

/// `2026-11-25 19:08:16+05` → `2026-11-25T19:08:16+05:00`: the date and time
/// are joined with `T` and an hour-only UTC offset gains `:00`. Offsets with
/// minutes or seconds, a ` BC` suffix, and the infinities stay as they are.
fn timestamptz_to_iso(text: &str) -> String {
    let (body, era) = match text.strip_suffix(" BC") {
        Some(body) => (body, " BC"),
        None => (text, ""),
    };
    let Some((date, time)) = body.split_once(' ') else {
        return text.to_owned();
    };
    let offset_start = time.rfind(['+', '-']).map_or(time.len(), |at| at + 1);
    let hour_only = time.get(offset_start..).is_some_and(|offset| {
        offset.len() == 2 && offset.bytes().all(|byte| byte.is_ascii_digit())
    });
    let minutes = if hour_only { ":00" } else { "" };
    format!("{date}T{time}{minutes}{era}")
}

/// Converts a space-separated `int2vector` or `oidvector` to a JSON array.
fn vector_to_json(element_oid: u32, text: &str) -> Value {
    let items = text
        .split_ascii_whitespace()
        .map(|item| text_to_json(element_oid, item))
        .collect();
    Value::Array(items)
}

/// Converts array text such as `{1,2,NULL}` or `[0:1]={{"a b",c}}` to a
/// JSON array, or to the JSON string of the text when it does not parse.
fn array_to_json(element_oid: u32, text: &str) -> Value {
    let body = strip_dimensions(text);
    let mut parser = ArrayParser {
        chars: body.chars().peekable(),
        element_oid,
    };
    match parser.array(1) {
        Some(value) if parser.chars.next().is_none() => value,
        _ => Value::String(text.to_owned()),
    }
}

/// Drops the `[lower:upper]...=` prefix Postgres writes for arrays whose
/// lower bounds are not 1; `to_jsonb()` ignores bounds.
fn strip_dimensions(text: &str) -> &str {
    match text.split_once('=') {
        Some((bounds, body)) if is_bounds(bounds) => body,
        _ => text,
    }
}

/// Whether `text` is a list of dimension bounds such as `[0:1][-2:3]`.
fn is_bounds(text: &str) -> bool {
    let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) else {
        return false;
    };
    inner.split("][").all(|dimension| {
        dimension
            .split_once(':')
            .is_some_and(|(lower, upper)| is_integer(lower) && is_integer(upper))
    })
}

fn is_integer(text: &str) -> bool {
    is_digits(text.strip_prefix('-').unwrap_or(text))
}

/// Recursive-descent reader of Postgres array text output.
struct ArrayParser<'a> {
    /// Unread characters of the array text.
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    /// Type of the elements, which decides how each converts to JSON.
    element_oid: u32,
}

impl ArrayParser<'_> {
    /// Reads one `{...}` level; `depth` counts dimensions so far.
    fn array(&mut self, depth: usize) -> Option<Value> {
        if depth > MAX_ARRAY_DIMENSIONS || self.chars.next() != Some('{') {
            return None;
        }
        let mut items = Vec::new();
        if self.chars.next_if_eq(&'}').is_some() {
            return Some(Value::Array(items));
        }
        loop {
            items.push(self.item(depth)?);
            match self.chars.next()? {
                ',' => {}
                '}' => return Some(Value::Array(items)),
                _ => return None,
            }
        }
    }

    /// Reads one element or nested array.
    fn item(&mut self, depth: usize) -> Option<Value> {
        match self.chars.peek()? {
            '{' => self.array(depth + 1),
            '"' => {
                let text = self.quoted()?;
                Some(text_to_json(self.element_oid, &text))
            }
            _ => {
                let text = self.unquoted()?;
                Some(if text.eq_ignore_ascii_case("NULL") {
                    Value::Null
                } else {
                    text_to_json(self.element_oid, &text)
                })
            }
        }
    }

    /// Reads a double-quoted element, resolving backslash escapes.
    fn quoted(&mut self) -> Option<String> {
        self.chars.next();
        let mut text = String::new();
        loop {
            match self.chars.next()? {
                '"' => return Some(text),
                '\\' => text.push(self.chars.next()?),
                c => text.push(c),
            }
        }
    }

    /// Reads an element without quotes, up to the next `,` or `}`.
    fn unquoted(&mut self) -> Option<String> {
        let mut text = String::new();
        while let Some(c) = self.chars.next_if(|c| !matches!(c, ',' | '}')) {
            if matches!(c, '{' | '"' | '\\') {
                return None;
            }
            text.push(c);
        }
        (!text.is_empty()).then_some(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Asserts that `text` of type `oid` converts to the value `serde_json`
    /// reads from `jsonb`, the text `to_jsonb()` prints for it, including
    /// number representation and key order.
    fn assert_converts(oid: u32, text: &str, jsonb: &str) {
        let expected: Value = serde_json::from_str(jsonb).unwrap();
        let actual = text_to_json(oid, text);
        assert_eq!(actual, expected, "oid {oid} text {text:?}");
        assert_eq!(
            actual.to_string(),
            expected.to_string(),
            "oid {oid} text {text:?}"
        );
    }

    fn assert_all(oid: u32, cases: &[(&str, &str)]) {
        for (text, jsonb) in cases {
            assert_converts(oid, text, jsonb);
        }
    }

    fn string(text: &str) -> String {
        Value::String(text.to_owned()).to_string()
    }

    #[test]
    fn bool_values() {
        assert_all(BOOL, &[("t", "true"), ("f", "false")]);
    }

    #[test]
    fn integer_values() {
        assert_all(
            INT2,
            &[("0", "0"), ("32767", "32767"), ("-32768", "-32768")],
        );
        assert_all(INT4, &[("2147483647", "2147483647"), ("-1", "-1")]);
        assert_all(
            INT8,
            &[
                ("9223372036854775807", "9223372036854775807"),
                ("-9223372036854775808", "-9223372036854775808"),
            ],
        );
        assert_eq!(text_to_json(INT8, "42"), Value::from(42_i64));
    }

    #[test]
    fn oid_is_a_string_like_to_jsonb() {
        assert_all(OID, &[("26", "\"26\""), ("4294967295", "\"4294967295\"")]);
    }

    #[test]
    fn float8_values() {
        let huge = format!("1{}", "0".repeat(300));
        assert_all(
            FLOAT8,
            &[
                ("0.1", "0.1"),
                ("-2.5", "-2.5"),
                ("1.5e-07", "0.00000015"),
                ("1e+300", &huge),
                ("1.2345678901234568e+17", "123456789012345680"),
                ("5e-324", &format!("0.{}5", "0".repeat(323))),
                ("0", "0"),
                ("-0", "0"),
                ("NaN", "\"NaN\""),
                ("Infinity", "\"Infinity\""),
                ("-Infinity", "\"-Infinity\""),
            ],
        );
    }

    #[test]
    fn float4_values() {
        assert_all(
            FLOAT4,
            &[
                ("0.3", "0.3"),
                ("3.4e+38", "340000000000000000000000000000000000000"),
                ("1e-07", "0.0000001"),
                ("16777216", "16777216"),
                ("NaN", "\"NaN\""),
                ("-Infinity", "\"-Infinity\""),
            ],
        );
    }

    #[test]
    fn numeric_values() {
        assert_all(
            NUMERIC,
            &[
                ("0", "0"),
                ("1.50", "1.50"),
                ("-0.000", "0.000"),
                (
                    "12345678901234567890.123456789",
                    "12345678901234567890.123456789",
                ),
                ("18446744073709551615", "18446744073709551615"),
                ("18446744073709551616", "18446744073709551616"),
                ("0.00000000000000000001", "0.00000000000000000001"),
                ("NaN", "\"NaN\""),
                ("Infinity", "\"Infinity\""),
                ("-Infinity", "\"-Infinity\""),
            ],
        );
    }

    #[test]
    fn numeric_precision_is_that_of_f64() {
        let value = text_to_json(NUMERIC, "3.14159265358979323846264338327950288");
        assert_eq!(value, Value::from(std::f64::consts::PI));
        assert_eq!(text_to_json(NUMERIC, "1.50").to_string(), "1.5");
    }

    #[test]
    fn numbers_beyond_f64_become_strings() {
        let text = format!("1{}", "0".repeat(309));
        assert_eq!(text_to_json(NUMERIC, &text), Value::String(text.clone()));
        assert_eq!(text_to_json(FLOAT8, "1e+400"), Value::from("1e+400"));
    }

    #[test]
    fn numeric_form_matches_postgres_numeric_output() {
        let cases = [
            ("1.5e-07", "0.00000015"),
            ("1e+3", "1000"),
            ("1.0e2", "100"),
            ("1.50e1", "15.0"),
            ("0.1e1", "1"),
            ("-0.0", "0.0"),
            ("-0", "0"),
            ("-1.25E-2", "-0.0125"),
            ("120e-1", "12.0"),
            ("7", "7"),
        ];
        for (input, output) in cases {
            assert_eq!(numeric_form(input).as_deref(), Some(output), "{input}");
        }
        for input in ["", "-", "1.", ".5", "01", "1e", "1e+", "NaN", "1e100001"] {
            assert_eq!(numeric_form(input), None, "{input}");
        }
    }

    #[test]
    fn json_values_are_normalized_like_jsonb() {
        let cases = [
            (
                r#"{"b":1,"aa":2,"a":3,"b":4}"#,
                r#"{"a": 3, "b": 4, "aa": 2}"#,
            ),
            (
                "[1.0e2, -0, 1.50e1, 1e-3, 0.1e1, -0.0, 1E+2]",
                "[100, 0, 15.0, 0.001, 1, 0.0, 100]",
            ),
            (
                r#"  {"nested": {"zz": [1, {"b": 2, "a": 1}], "a": true}, "": -1.5E-3}  "#,
                r#"{"": -0.0015, "nested": {"a": true, "zz": [1, {"a": 1, "b": 2}]}}"#,
            ),
            (
                r#"{"k": "1e5 \"inside\" string", "n": null}"#,
                r#"{"k": "1e5 \"inside\" string", "n": null}"#,
            ),
            (r#""x\"y\u0041""#, r#""x\"yA""#),
            ("null", "null"),
            ("-1e-7", "-0.0000001"),
        ];
        for (text, jsonb) in cases {
            assert_converts(JSON, text, jsonb);
        }
    }

    #[test]
    fn jsonb_values_parse() {
        assert_all(
            JSONB,
            &[
                (
                    r#"{"a": 3, "b": 4, "aa": 2}"#,
                    r#"{"a": 3, "b": 4, "aa": 2}"#,
                ),
                ("[100, 15.0]", "[100, 15.0]"),
                (r#""é""#, r#""é""#),
                ("true", "true"),
            ],
        );
    }

    #[test]
    fn unparsable_json_falls_back_to_string() {
        for text in ["{", "not json", "[1,]"] {
            assert_eq!(text_to_json(JSON, text), Value::from(text));
            assert_eq!(text_to_json(JSONB, text), Value::from(text));
        }
    }

    #[test]
    fn timestamptz_values() {
        assert_all(
            TIMESTAMPTZ,
            &[
                (
                    "2026-11-25 19:08:16.123456+00",
                    r#""2026-11-25T19:08:16.123456+00:00""#,
                ),
                (
                    "2026-11-25 19:08:16+05:30",
                    r#""2026-11-25T19:08:16+05:30""#,
                ),
                (
                    "2026-11-25 19:08:16.5-08",
                    r#""2026-11-25T19:08:16.5-08:00""#,
                ),
                (
                    "1900-11-25 19:08:16-03:30:52",
                    r#""1900-11-25T19:08:16-03:30:52""#,
                ),
                (
                    "0044-03-15 12:00:00+00 BC",
                    r#""0044-03-15T12:00:00+00:00 BC""#,
                ),
                ("10000-01-01 00:00:00+00", r#""10000-01-01T00:00:00+00:00""#),
                ("infinity", r#""infinity""#),
                ("-infinity", r#""-infinity""#),
            ],
        );
    }

    #[test]
    fn timestamp_values() {
        assert_all(
            TIMESTAMP,
            &[
                ("2026-11-25 19:08:16.5", r#""2026-11-25T19:08:16.5""#),
                ("2026-11-25 00:00:00", r#""2026-11-25T00:00:00""#),
                (
                    "0044-03-15 12:00:00.25 BC",
                    r#""0044-03-15T12:00:00.25 BC""#,
                ),
                ("infinity", r#""infinity""#),
                ("-infinity", r#""-infinity""#),
            ],
        );
    }

    #[test]
    fn other_types_are_their_text() {
        let cases = [
            (1082, "2026-11-25"),
            (1082, "0044-03-15 BC"),
            (1083, "12:34:56.789"),
            (1266, "12:34:56+00"),
            (1266, "12:34:56.1-08"),
            (2950, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            (25, "with \"quotes\" and \\back\\slash"),
            (25, "NULL"),
            (25, ""),
            (25, "tab\tnewline\nend é 😀"),
            (1043, "v"),
            (1042, "ab   "),
            (19, "nm"),
            (18, "\""),
            (1186, "1 year 2 mons 3 days 04:05:06.7"),
            (17, "\\x00ff10"),
            (869, "192.168.0.1/24"),
            (790, "$1.50"),
            (99_999, "{1,2}"),
        ];
        for (oid, text) in cases {
            assert_converts(oid, text, &string(text));
        }
    }

    #[test]
    fn vector_values() {
        assert_converts(INT2VECTOR, "1 2 3", "[1, 2, 3]");
        assert_converts(INT2VECTOR, "", "[]");
        assert_converts(OIDVECTOR, "1 2", r#"["1", "2"]"#);
    }

    #[test]
    fn arrays_of_scalars() {
        let cases = [
            (1000, "{t,f,NULL}", "[true, false, null]"),
            (1005, "{1,-2,NULL}", "[1, -2, null]"),
            (1007, "{}", "[]"),
            (
                1016,
                "{9223372036854775807,-9223372036854775808}",
                "[9223372036854775807, -9223372036854775808]",
            ),
            (1015, r#"{a,"b c"}"#, r#"["a", "b c"]"#),
            (1014, r#"{"a  ",bcd}"#, r#"["a  ", "bcd"]"#),
            (
                1021,
                "{1.5,NaN,-Infinity,3.4e+38,-0}",
                r#"[1.5, "NaN", "-Infinity", 340000000000000000000000000000000000000, 0]"#,
            ),
            (
                1022,
                "{1e-07,NaN,Infinity,1.2345678912345678e+16}",
                r#"[0.0000001, "NaN", "Infinity", 12345678912345678]"#,
            ),
            (1231, "{1.50,NaN,-0.000}", r#"[1.50, "NaN", 0.000]"#),
            (
                2951,
                "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11,NULL}",
                r#"["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", null]"#,
            ),
            (
                1185,
                r#"{"2026-01-01 00:00:00+00",infinity,"2026-01-01 05:00:00+05:30",NULL}"#,
                r#"["2026-01-01T00:00:00+00:00", "infinity", "2026-01-01T05:00:00+05:30", null]"#,
            ),
            (
                1115,
                r#"{"2026-01-01 00:00:00.5",-infinity}"#,
                r#"["2026-01-01T00:00:00.5", "-infinity"]"#,
            ),
            (
                1182,
                r#"{2026-11-25,infinity,"0044-03-15 BC"}"#,
                r#"["2026-11-25", "infinity", "0044-03-15 BC"]"#,
            ),
            (1028, "{26}", r#"["26"]"#),
            (1041, "{1.2.3.4}", r#"["1.2.3.4"]"#),
            (3905, r#"{"[1,3)",empty}"#, r#"["[1,3)", "empty"]"#),
        ];
        for (oid, text, jsonb) in cases {
            assert_converts(oid, text, jsonb);
        }
    }

    #[test]
    fn arrays_of_text_handle_quoting() {
        let cases = [
            (
                r#"{"a b","c\"d",NULL,"NULL",null,"null"}"#,
                r#"["a b", "c\"d", null, "NULL", null, "null"]"#,
            ),
            (
                r#"{"",x," x ","{}","a,b",é,"back\\slash"}"#,
                r#"["", "x", " x ", "{}", "a,b", "é", "back\\slash"]"#,
            ),
            (r#"{"\\x0102"}"#, r#"["\\x0102"]"#),
        ];
        for (text, jsonb) in cases {
            assert_converts(1009, text, jsonb);
        }
    }

    #[test]
    fn arrays_of_json() {
        assert_converts(
            199,
            r#"{"{\"b\":1,\"a\":[1.0]}",NULL,1e2,"\"s\""}"#,
            r#"[{"a": [1.0], "b": 1}, null, 100, "s"]"#,
        );
        assert_converts(
            3807,
            r#"{"{\"x,y\": \"}\"}",null}"#,
            r#"[{"x,y": "}"}, null]"#,
        );
    }

    #[test]
    fn arrays_of_vectors_nest() {
        assert_converts(1006, r#"{"1 2",3,""}"#, "[[1, 2], [3], []]");
        assert_converts(1013, r#"{"1 2"}"#, r#"[["1", "2"]]"#);
    }

    #[test]
    fn multidimensional_arrays_nest() {
        assert_converts(1007, "{{1,2},{3,4}}", "[[1, 2], [3, 4]]");
        assert_converts(1007, "{{NULL,NULL}}", "[[null, null]]");
        assert_converts(1007, "{{{{{{1}}}}}}", "[[[[[[1]]]]]]");
        assert_converts(1009, "{{a,b},{c,d}}", r#"[["a", "b"], ["c", "d"]]"#);
    }

    #[test]
    fn explicit_bounds_are_dropped() {
        assert_converts(1005, "[0:1]={1,2}", "[1, 2]");
        assert_converts(1007, "[2:2][3:4]={{1,2}}", "[[1, 2]]");
        assert_converts(1009, "[-3:-2]={a,b}", r#"["a", "b"]"#);
    }

    #[test]
    fn malformed_arrays_become_strings() {
        let cases = [
            "",
            "{",
            "{1,2",
            "{1,2}}",
            "{1,2}x",
            "{\"a}",
            "{a\"b}",
            "{,}",
            "{1,}",
            "1,2",
            "[1:2={1,2}",
            "[x]={1}",
            "{{{{{{{1}}}}}}}",
        ];
        for text in cases {
            assert_eq!(text_to_json(1007, text), Value::from(text), "{text:?}");
        }
    }

    #[test]
    fn unsupported_array_types_are_their_text() {
        assert_converts(
            1020,
            "{(1,1),(0,0);(2,2),(1,1)}",
            r#""{(1,1),(0,0);(2,2),(1,1)}""#,
        );
    }

    #[test]
    fn element_types_of_common_arrays() {
        let cases = [
            (1000, BOOL),
            (1005, INT2),
            (1007, INT4),
            (1016, INT8),
            (1009, 25),
            (1015, 1043),
            (1014, 1042),
            (1021, FLOAT4),
            (1022, FLOAT8),
            (1231, NUMERIC),
            (2951, 2950),
            (1185, TIMESTAMPTZ),
            (1115, TIMESTAMP),
            (1182, 1082),
            (199, JSON),
            (3807, JSONB),
        ];
        for (array, element) in cases {
            assert_eq!(element_type(array), Some(element), "{array}");
        }
        for oid in [0, 23, 25, 1020, 2287, u32::MAX] {
            assert_eq!(element_type(oid), None, "{oid}");
        }
    }

    #[test]
    fn array_table_is_sorted_and_never_nests_arrays() {
        assert!(ARRAY_ELEMENTS.windows(2).all(|pair| pair[0].0 < pair[1].0));
        for (_, element) in ARRAY_ELEMENTS {
            assert_eq!(element_type(*element), None);
        }
    }

    #[test]
    fn arbitrary_text_never_panics() {
        let oids = [
            BOOL,
            INT2,
            INT4,
            INT8,
            OID,
            FLOAT4,
            FLOAT8,
            NUMERIC,
            JSON,
            JSONB,
            TIMESTAMP,
            TIMESTAMPTZ,
            INT2VECTOR,
            OIDVECTOR,
            1000,
            1007,
            1009,
            1022,
            1185,
            199,
            3807,
            25,
        ];
        let alphabet: Vec<char> = "{}[]:=,\"\\ -+.eE0159tfNULnaé\u{1F600}".chars().collect();
        let mut state: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = |bound: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            usize::try_from(state % u64::try_from(bound).unwrap()).unwrap()
        };
        for _ in 0..20_000 {
            let len = next(24);
            let text: String = (0..len).map(|_| alphabet[next(alphabet.len())]).collect();
            let oid = oids[next(oids.len())];
            let _ = text_to_json(oid, &text);
        }
    }
}
