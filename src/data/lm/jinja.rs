//! The Jinja environment transformers renders chat templates in, rebuilt on minijinja:
//! `trim_blocks` and `lstrip_blocks` on, loop controls, Python's string and dict methods
//! (minijinja-contrib's pycompat), and the three extras transformers adds: a `tojson` filter that
//! writes what Python's `json.dumps` writes (no HTML escaping, `indent`, `separators`,
//! `sort_keys`, `ensure_ascii`), `raise_exception(message)` and `strftime_now(format)` (UTC). Its
//! `{% generation %}` blocks (which mark assistant text for `return_assistant_tokens_mask`) are
//! rendered as plain blocks: the replies are found by prefix rendering instead.

use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Kwargs, ValueKind};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, Value};
use std::fmt::Write as _;
use std::sync::LazyLock;

/// The most instructions one rendering may run: real chat templates take a few hundred per
/// message, so this is a conversation of thousands of turns; a template that loops without end
/// (or nests loops to billions of steps) stops with minijinja's out-of-fuel error instead of
/// running until the machine's memory is gone.
pub(crate) const FUEL: u64 = 50_000_000;

/// A minijinja environment set up as transformers' chat-template environment.
pub(crate) fn environment() -> Result<Environment<'static>, Error> {
    let mut env = Environment::new();
    env.set_fuel(Some(FUEL));
    env.set_syntax(SyntaxConfig::builder().trim_blocks(true).lstrip_blocks(true).build()?);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_filter("tojson", tojson);
    env.add_function("raise_exception", raise_exception);
    env.add_function("strftime_now", strftime_now);
    Ok(env)
}

/// The template with `{% generation %}` / `{% endgeneration %}` made plain `if true` blocks (their
/// whitespace control kept).
pub(crate) fn plain_generation_blocks(source: &str) -> String {
    static TAG: LazyLock<regex::Regex> =
        LazyLock::new(|| regex::Regex::new(r"\{%([-+]?)\s*(end)?generation\s*([-+]?)%\}").expect("a valid regular expression"));
    TAG.replace_all(source, |c: &regex::Captures| {
        let body = if c.get(2).is_some() { "endif" } else { "if true" };
        format!("{{%{} {body} {}%}}", &c[1], &c[3])
    })
    .into_owned()
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

/// Python's `json.dumps(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`
/// with the same keyword arguments, as transformers' `tojson` filter.
fn tojson(value: &Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<Value> = kwargs.get("indent")?;
    let separators: Option<Vec<String>> = kwargs.get("separators")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    kwargs.assert_all_used()?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => match (v.as_i64(), v.as_str()) {
            (Some(n), _) => Some(" ".repeat(n.max(0) as usize)),
            (None, Some(s)) => Some(s.to_string()),
            _ => return Err(Error::new(ErrorKind::InvalidOperation, "tojson: indent must be an integer or a string")),
        },
    };
    let (item, key) = match separators.as_deref() {
        Some([item, key]) => (item.clone(), key.clone()),
        Some(_) => return Err(Error::new(ErrorKind::InvalidOperation, "tojson: separators must be two strings")),
        None if indent.is_some() => (",".to_string(), ": ".to_string()),
        None => (", ".to_string(), ": ".to_string()),
    };
    let style = JsonStyle { indent, item, key, sort_keys: sort_keys.unwrap_or(false), ensure_ascii: ensure_ascii.unwrap_or(false) };
    let mut out = String::new();
    write_json(&mut out, value, &style, 0)?;
    Ok(Value::from_safe_string(out))
}

/// How [`write_json`] lays JSON out (Python's `json.dumps` arguments).
struct JsonStyle {
    indent: Option<String>,
    item: String,
    key: String,
    sort_keys: bool,
    ensure_ascii: bool,
}

impl JsonStyle {
    /// What comes before an item at `depth` (a newline and indentation when indenting).
    fn newline(&self, out: &mut String, depth: usize) {
        if let Some(indent) = &self.indent {
            out.push('\n');
            for _ in 0..depth {
                out.push_str(indent);
            }
        }
    }
}

fn write_json(out: &mut String, value: &Value, style: &JsonStyle, depth: usize) -> Result<(), Error> {
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number if value.is_integer() => out.push_str(&value.to_string()),
        ValueKind::Number => {
            let x = f64::try_from(value.clone())?;
            match x {
                x if x.is_nan() => out.push_str("NaN"),
                x if x == f64::INFINITY => out.push_str("Infinity"),
                x if x == f64::NEG_INFINITY => out.push_str("-Infinity"),
                x => {
                    let _ = write!(out, "{x:?}");
                }
            }
        }
        ValueKind::String => write_string(out, value.as_str().unwrap_or_default(), style.ensure_ascii),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&style.item);
                }
                style.newline(out, depth + 1);
                write_json(out, item, style, depth + 1)?;
            }
            style.newline(out, depth);
            out.push(']');
        }
        ValueKind::Map => {
            let mut keys: Vec<Value> = value.try_iter()?.collect();
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            if style.sort_keys {
                keys.sort_by_key(|k| k.to_string());
            }
            out.push('{');
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(&style.item);
                }
                style.newline(out, depth + 1);
                write_string(out, &key.to_string(), style.ensure_ascii);
                out.push_str(&style.key);
                write_json(out, &value.get_item(key)?, style, depth + 1)?;
            }
            style.newline(out, depth);
            out.push('}');
        }
        kind => return Err(Error::new(ErrorKind::InvalidOperation, format!("tojson: a {kind} is not JSON serializable"))),
    }
    Ok(())
}

/// A JSON string literal as Python writes it (`\uXXXX` for control characters, and for every
/// non-ASCII character when `ensure_ascii`).
fn write_string(out: &mut String, s: &str, ensure_ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ensure_ascii && !c.is_ascii()) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The current UTC time formatted with Python's `strftime` codes (%Y %y %m %d %e %j %H %I %M %S %p
/// %a %A %b %B %h %%), as transformers' `strftime_now` (which uses the local time zone).
fn strftime_now(format: String) -> Result<Value, Error> {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    strftime(&format, secs as i64).map(Value::from)
}

/// `format` applied to the UTC time `secs` seconds after 1970-01-01 00:00:00.
pub(crate) fn strftime(format: &str, secs: i64) -> Result<String, Error> {
    const DAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
    const MONTHS: [&str; 12] =
        ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];
    let (days, second_of_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday (index 3)
    let day_of_year = days - days_from_civil(year, 1, 1) + 1;
    let (hour, minute, second) = (second_of_day / 3600, second_of_day / 60 % 60, second_of_day % 60);
    let month_name = MONTHS[(month - 1) as usize];
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let _ = match chars.next() {
            Some('Y') => write!(out, "{year}"),
            Some('y') => write!(out, "{:02}", year.rem_euclid(100)),
            Some('m') => write!(out, "{month:02}"),
            Some('d') => write!(out, "{day:02}"),
            Some('e') => write!(out, "{day:>2}"),
            Some('j') => write!(out, "{day_of_year:03}"),
            Some('H') => write!(out, "{hour:02}"),
            Some('I') => write!(out, "{:02}", (hour + 11) % 12 + 1),
            Some('M') => write!(out, "{minute:02}"),
            Some('S') => write!(out, "{second:02}"),
            Some('p') => write!(out, "{}", if hour < 12 { "AM" } else { "PM" }),
            Some('a') => write!(out, "{}", &DAYS[weekday][..3]),
            Some('A') => write!(out, "{}", DAYS[weekday]),
            Some('b') | Some('h') => write!(out, "{}", &month_name[..3]),
            Some('B') => write!(out, "{month_name}"),
            Some('%') => write!(out, "%"),
            other => {
                let code = other.map(|c| format!("%{c}")).unwrap_or_else(|| "a lone %".into());
                return Err(Error::new(ErrorKind::InvalidOperation, format!("strftime_now: unsupported format code {code}")));
            }
        };
    }
    Ok(out)
}

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Days since 1970-01-01 of a civil date (the inverse of [`civil_from_days`]).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(source: &str, ctx: Value) -> String {
        let mut env = environment().unwrap();
        env.add_template_owned("t", plain_generation_blocks(source)).unwrap();
        env.get_template("t").unwrap().render(ctx).unwrap()
    }

    /// Expected strings are Python 3's `json.dumps` of the same value.
    #[test]
    fn tojson_writes_what_python_json_dumps_writes() {
        let v = Value::from(minijinja::value::Serde(serde_json::json!({"name": "f", "args": [1, 2.5, true, null], "s": "<a&b> é\n\u{1}"})));
        let ctx = minijinja::context! { v => v };
        // json.dumps(v, ensure_ascii=False) with keys in insertion order ("args", "name", "s": serde_json sorts).
        assert_eq!(render("{{ v | tojson }}", ctx.clone()), r#"{"args": [1, 2.5, true, null], "name": "f", "s": "<a&b> é\n\u0001"}"#);
        assert_eq!(
            render("{{ v | tojson(indent=2) }}", ctx.clone()),
            "{\n  \"args\": [\n    1,\n    2.5,\n    true,\n    null\n  ],\n  \"name\": \"f\",\n  \"s\": \"<a&b> é\\n\\u0001\"\n}"
        );
        assert_eq!(render("{{ v.s | tojson(ensure_ascii=true) }}", ctx.clone()), r#""<a&b> \u00e9\n\u0001""#);
        assert_eq!(render("{{ v.args | tojson(separators=[',', ':']) }}", ctx.clone()), "[1,2.5,true,null]");
        assert_eq!(render("{{ [] | tojson }}{{ {} | tojson(indent=4) }}", ctx), "[]{}");
    }

    #[test]
    fn raise_exception_fails_the_render_with_its_message() {
        let mut env = environment().unwrap();
        env.add_template_owned("t", "{{ raise_exception('roles must alternate') }}").unwrap();
        let e = env.get_template("t").unwrap().render(()).unwrap_err();
        assert!(e.to_string().contains("roles must alternate"), "{e}");
    }

    #[test]
    fn generation_blocks_render_their_body_with_whitespace_control_kept() {
        let t = "A {%- generation -%} B {%- endgeneration %} C{% generation %}D{% endgeneration %}";
        assert_eq!(render(t, Value::from(())), "AB CD");
    }

    #[test]
    fn trim_and_lstrip_blocks_and_python_methods_are_on() {
        let t = "  {% if true %}\nx{{ ' y '.strip() }}{{ 'ab'.upper() }}\n  {% endif %}\n{% for i in range(3) %}{% if i == 1 %}{% continue %}{% endif %}{{ i }}{% endfor %}";
        assert_eq!(render(t, Value::from(())), "xyAB\n02");
    }

    #[test]
    fn strftime_formats_known_instants() {
        // 2024-07-26 13:25:09 UTC was a Friday, day 208 of a leap year.
        let t = 1_722_000_309;
        assert_eq!(strftime("%d %b %Y", t).unwrap(), "26 Jul 2024");
        assert_eq!(strftime("%A %B %e %j %H:%M:%S %I%p %y %%", t).unwrap(), "Friday July 26 208 13:25:09 01PM 24 %");
        assert_eq!(strftime("%Y-%m-%d %a", 0).unwrap(), "1970-01-01 Thu");
        assert_eq!(strftime("%Y-%m-%d", 951_782_400).unwrap(), "2000-02-29");
        assert!(strftime("%Q", t).unwrap_err().to_string().contains("%Q"));
    }
}
