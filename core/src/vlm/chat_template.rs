//! Hugging Face chat templates rendered as transformers' `apply_chat_template` renders them:
//! where a model folder keeps its template, and a minijinja environment with the Jinja options
//! and the Python string methods and `tojson` that templates written for Python rely on. Any
//! student family with a chat template uses it.
//!
//! Templates come with models and bundles, i.e. from the web, so they run on a budget:
//! minijinja's fuel charges one unit per instruction and one per 64 bytes of text a template
//! produces (operators, filters, output), checking sizes known in advance before allocating.
//! [`TEMPLATE_FUEL`] therefore bounds both the time (a `range` loop nested to hang) and the
//! memory (a string doubled until the machine gives out) of one render, and with it the size
//! of the rendered prompt. Our own filters and methods keep to the same budget.
//!
//! Fuel does not cover one thing: a namespace is the one mutable value of the language, and a
//! namespace stored inside itself (`{% set ns.s = (ns, 1) %}`, found by the fuzz suite) makes
//! printing, joining or comparing it recurse until the stack overflows and the process
//! aborts. [`check_namespaces`] refuses, when the template is loaded, any use of a namespace
//! other than reading and setting its attributes, so no namespace ever becomes part of a value.

use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Environment, ErrorKind, Value};

use crate::weights::{FileSource, LoadError};

/// The name the template is registered under (and its key in the config files).
pub(crate) const TEMPLATE_NAME: &str = "chat_template";

/// Fuel for one render: 2M units, i.e. at most 2M template instructions or 128 MiB of text
/// produced (minijinja charges a byte at 1/64 of an instruction). Llama 3.2 Vision's template
/// needs about 5,000 for a ten-turn, 100 KB conversation (test `the_budget_is_far_above_real_use`);
/// spending the whole budget takes well under a second.
pub const TEMPLATE_FUEL: u64 = 2_000_000;

/// Bytes of text one unit of fuel pays for (minijinja's `UNITS_PER_FUEL`).
const BYTES_PER_FUEL: u64 = 64;

/// The template source and the file it came from.
pub(crate) fn find_chat_template(
    source: &FileSource<'_>,
    tokenizer_config: Option<&serde_json::Value>,
) -> Result<(String, std::path::PathBuf), LoadError> {
    let json = "chat_template.json";
    if source.has(json) {
        let value: serde_json::Value = source.json(json)?;
        if let Some(template) = value.get(TEMPLATE_NAME).and_then(pick_template) {
            return Ok((template, source.path(json)));
        }
    }
    if let Some(template) = tokenizer_config
        .and_then(|config| config.get(TEMPLATE_NAME))
        .and_then(pick_template)
    {
        return Ok((template, source.path("tokenizer_config.json")));
    }
    let jinja = "chat_template.jinja";
    Ok((source.text(jinja)?, source.path(jinja)))
}

/// A template string, or the `default` (else first) of a list of `{name, template}`.
fn pick_template(value: &serde_json::Value) -> Option<String> {
    if let Some(template) = value.as_str() {
        return Some(template.to_string());
    }
    let named = value.as_array()?;
    let default = named
        .iter()
        .find(|entry| entry.get("name").and_then(|n| n.as_str()) == Some("default"))
        .or_else(|| named.first())?;
    Some(default.get("template")?.as_str()?.to_string())
}

/// A minijinja environment configured as transformers' `_compile_jinja_template`
/// (`trim_blocks`, `lstrip_blocks`, loop controls, `raise_exception`, a `tojson` that does not
/// escape HTML), with Python's `str.strip` for `trim` and a few Python methods templates call.
pub(crate) fn template_environment(
    source: String,
) -> Result<Environment<'static>, minijinja::Error> {
    let mut env = Environment::new();
    env.set_fuel(Some(TEMPLATE_FUEL));
    env.set_syntax(
        SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()?,
    );
    env.add_filter("trim", |value: &str, chars: Option<&str>| {
        python_strip(value, chars, true, true)
    });
    env.add_filter("tojson", tojson);
    env.add_function(
        "raise_exception",
        |message: String| -> Result<Value, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
        },
    );
    env.set_unknown_method_callback(python_method);
    check_namespaces(&source)
        .map_err(|reason| minijinja::Error::new(ErrorKind::InvalidOperation, reason))?;
    env.add_template_owned(TEMPLATE_NAME, source)?;
    Ok(env)
}

/// Refuses a template that could store a namespace inside a value (see the module notes): a
/// namespace must be made by `{% set NAME = namespace(...) %}` and `NAME` then used only as
/// `NAME.attr` or `NAME[...]`. Chat templates use namespaces exactly so (flags and counters
/// across a loop over the messages).
pub(crate) fn check_namespaces(source: &str) -> Result<(), String> {
    use minijinja::machinery::{Token, tokenize};
    // The tokenizer repeats an error forever; a template that does not tokenize fails to
    // compile anyway, so its tokens up to the error are enough.
    let tokens: Vec<Token<'_>> = tokenize(source, false, SyntaxConfig::default())
        .map_while(Result::ok)
        .filter(|(token, _)| !matches!(token, Token::TemplateData(_)))
        .map(|(token, _)| token)
        .collect();
    let ident = |i: usize| match tokens.get(i) {
        Some(Token::Ident(name)) => Some(*name),
        _ => None,
    };
    // `set NAME = namespace(` with the namespace call at index i.
    let is_definition = |i: usize| {
        i >= 3
            && ident(i - 3) == Some("set")
            && ident(i - 2).is_some()
            && matches!(tokens[i - 1], Token::Assign)
            && matches!(tokens.get(i + 1), Some(Token::ParenOpen))
    };
    let mut names = std::collections::BTreeSet::new();
    for i in 0..tokens.len() {
        if ident(i) == Some("namespace")
            && !matches!(i.checked_sub(1).map(|p| &tokens[p]), Some(Token::Dot))
        {
            if !is_definition(i) {
                return Err(
                    "the template calls namespace() other than as `{% set NAME = namespace(...) %}`; \
                     a namespace inside a value could contain itself, and printing it would \
                     recurse without end"
                        .into(),
                );
            }
            names.insert(ident(i - 2).unwrap_or_default());
        }
    }
    for i in 0..tokens.len() {
        let Some(name) = ident(i) else { continue };
        if !names.contains(name) {
            continue;
        }
        let after_dot = i > 0 && matches!(tokens[i - 1], Token::Dot);
        let defined_here = ident(i + 2) == Some("namespace") && is_definition(i + 2);
        let used_by_attribute = matches!(
            tokens.get(i + 1),
            Some(Token::Dot | Token::BracketOpen | Token::Assign)
        );
        if !(after_dot || defined_here || used_by_attribute) {
            return Err(format!(
                "the template uses the namespace `{name}` as a value; only its attributes \
                 (`{name}.x`) may be read or set, since a namespace stored in a value could \
                 contain itself, and printing it would recurse without end"
            ));
        }
    }
    Ok(())
}

/// The error with its cause chain (minijinja puts template details in the source).
pub(crate) fn describe(error: &minijinja::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Python's `str.isspace` (Rust's `char::is_whitespace` lacks the separators U+001C..U+001F).
fn python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// `str.strip` / `lstrip` / `rstrip` with optional characters.
fn python_strip(value: &str, chars: Option<&str>, left: bool, right: bool) -> String {
    let strip = |c: char| match chars {
        Some(chars) => chars.contains(c),
        None => python_space(c),
    };
    let mut text = value;
    if left {
        text = text.trim_start_matches(strip);
    }
    if right {
        text = text.trim_end_matches(strip);
    }
    text.to_string()
}

/// Python methods chat templates call on strings and dicts.
fn python_method(
    state: &mut minijinja::State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, minijinja::Error> {
    use minijinja::value::from_args;
    if let Some(text) = value.as_str() {
        match method {
            "strip" | "lstrip" | "rstrip" => {
                let (chars,): (Option<&str>,) = from_args(args)?;
                let (left, right) = (method != "rstrip", method != "lstrip");
                return Ok(Value::from(python_strip(text, chars, left, right)));
            }
            "startswith" | "endswith" => {
                let (affix,): (&str,) = from_args(args)?;
                let hit = if method == "startswith" {
                    text.starts_with(affix)
                } else {
                    text.ends_with(affix)
                };
                return Ok(Value::from(hit));
            }
            "lower" => return Ok(Value::from(text.to_lowercase())),
            "upper" => return Ok(Value::from(text.to_uppercase())),
            _ => {}
        }
    } else if value.kind() == ValueKind::Map {
        match method {
            "items" => {
                let () = from_args(args)?;
                return state.apply_filter("items", std::slice::from_ref(value));
            }
            "keys" | "values" => {
                let () = from_args(args)?;
                let keys = value.try_iter()?;
                return Ok(if method == "keys" {
                    Value::from_iter(keys)
                } else {
                    Value::from_iter(keys.map(|key| value.get_item(&key).unwrap_or_default()))
                });
            }
            "get" => {
                let (key, default): (Value, Option<Value>) = from_args(args)?;
                let found = value.get_item(&key)?;
                return Ok(if found.is_undefined() {
                    default.unwrap_or(Value::from(()))
                } else {
                    found
                });
            }
            _ => {}
        }
    }
    Err(minijinja::Error::new(
        ErrorKind::UnknownMethod,
        format!("{} has no method named {method}", value.kind()),
    ))
}

/// transformers' `tojson`: Python's `json.dumps(x, ensure_ascii=False, indent=None,
/// separators=None, sort_keys=False)`, so `", "` / `": "` separators, keys in insertion order
/// and no HTML escaping.
fn tojson(
    state: &minijinja::State,
    value: &Value,
    kwargs: Kwargs,
) -> Result<String, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let separators: Option<Vec<String>> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;
    let separators = match separators {
        Some(pair) => match <[String; 2]>::try_from(pair) {
            Ok([item, key]) => Some((item, key)),
            Err(_) => {
                return Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    "tojson separators must be (item, key)",
                ));
            }
        },
        None => None,
    };
    let (item, key) = separators.unwrap_or_else(|| {
        // Python drops the space after "," when indenting.
        let item = if indent.is_some() { "," } else { ", " };
        (item.to_string(), ": ".to_string())
    });
    let style = JsonStyle {
        indent,
        ensure_ascii: ensure_ascii.unwrap_or(false),
        sort_keys: sort_keys.unwrap_or(false),
        item,
        key,
        // The engine charges the result once it exists; a large indent over a deep value
        // could make it enormous first, so stop at what the remaining fuel could pay for.
        max_bytes: state.fuel_levels().map_or(usize::MAX, |(_, remaining)| {
            usize::try_from(remaining.saturating_mul(BYTES_PER_FUEL)).unwrap_or(usize::MAX)
        }),
    };
    let mut out = String::new();
    style.write(value, 0, &mut out)?;
    Ok(out)
}

struct JsonStyle {
    indent: Option<usize>,
    ensure_ascii: bool,
    sort_keys: bool,
    item: String,
    key: String,
    /// The most bytes the output may reach: what the render's remaining fuel pays for.
    max_bytes: usize,
}

impl JsonStyle {
    fn write(&self, value: &Value, depth: usize, out: &mut String) -> Result<(), minijinja::Error> {
        if out.len() > self.max_bytes {
            return Err(minijinja::Error::new(
                ErrorKind::OutOfFuel,
                "tojson output beyond the template's budget",
            ));
        }
        match value.kind() {
            ValueKind::Undefined | ValueKind::None => out.push_str("null"),
            ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
            ValueKind::Number => out.push_str(&value.to_string()),
            ValueKind::String => self.string(value.as_str().unwrap_or_default(), out),
            ValueKind::Seq | ValueKind::Iterable => {
                let items: Vec<Value> = value.try_iter()?.collect();
                self.container(out, depth, '[', ']', &items, |item, out| {
                    self.write(item, depth + 1, out)
                })?;
            }
            ValueKind::Map => {
                let mut keys: Vec<Value> = value.try_iter()?.collect();
                if self.sort_keys {
                    keys.sort();
                }
                self.container(out, depth, '{', '}', &keys, |key, out| {
                    self.string(&key.to_string(), out);
                    out.push_str(&self.key);
                    self.write(&value.get_item(key)?, depth + 1, out)
                })?;
            }
            _ => self.string(&value.to_string(), out),
        }
        Ok(())
    }

    fn container(
        &self,
        out: &mut String,
        depth: usize,
        open: char,
        close: char,
        items: &[Value],
        mut each: impl FnMut(&Value, &mut String) -> Result<(), minijinja::Error>,
    ) -> Result<(), minijinja::Error> {
        out.push(open);
        if items.is_empty() {
            out.push(close);
            return Ok(());
        }
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                out.push_str(&self.item);
            }
            if let Some(indent) = self.indent {
                out.push('\n');
                self.pad(out, indent.saturating_mul(depth + 1))?;
            }
            each(item, out)?;
        }
        if let Some(indent) = self.indent {
            out.push('\n');
            self.pad(out, indent.saturating_mul(depth))?;
        }
        out.push(close);
        Ok(())
    }

    /// `width` spaces, if the budget allows them.
    fn pad(&self, out: &mut String, width: usize) -> Result<(), minijinja::Error> {
        if out.len().saturating_add(width) > self.max_bytes {
            return Err(minijinja::Error::new(
                ErrorKind::OutOfFuel,
                "tojson indentation beyond the template's budget",
            ));
        }
        out.push_str(&" ".repeat(width));
        Ok(())
    }

    fn string(&self, text: &str, out: &mut String) {
        // serde_json escapes what Python's json.dumps escapes when ensure_ascii is off.
        let escaped = serde_json::to_string(text).unwrap_or_default();
        if !self.ensure_ascii {
            out.push_str(&escaped);
            return;
        }
        for c in escaped.chars() {
            if c.is_ascii() {
                out.push(c);
            } else {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
}
