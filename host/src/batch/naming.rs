//! Output file names from a template: `{stem}` (input file name without extension),
//! `{name}` (with it), `{ext}` (its extension), `{model}` (the translate steps' model names,
//! joined by `+`; `none` without one), `{index}` (the input's position in the sorted input
//! list, the same on every shard). The output format follows the name's extension.

use std::path::Path;

pub const PLACEHOLDERS: &[&str] = &["stem", "name", "ext", "model", "index"];

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(&'static str),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameTemplate {
    parts: Vec<Part>,
    /// The template as written, for messages.
    source: String,
}

impl NameTemplate {
    pub fn parse(s: &str) -> Result<Self, String> {
        let valid =
            || PLACEHOLDERS.iter().map(|p| format!("{{{p}}}")).collect::<Vec<_>>().join(" ");
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let close =
                rest[open..].find('}').ok_or_else(|| format!("unclosed {{ in {s:?}"))? + open;
            let field = &rest[open + 1..close];
            let known = PLACEHOLDERS
                .iter()
                .find(|p| **p == field)
                .ok_or_else(|| format!("unknown placeholder {{{field}}}; valid: {}", valid()))?;
            parts.push(Part::Field(known));
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        if parts.is_empty() {
            return Err("the output name is empty".into());
        }
        let t = Self { parts, source: s.to_string() };
        // Outputs stay inside output.dir: what the text itself says is refused here, what
        // the placeholders bring in is checked per input before a run (`crate::outputs`).
        let sample = Path::new(s);
        if sample.has_root() {
            return Err(format!(
                "{s:?} is an absolute path; output names must stay inside output.dir"
            ));
        }
        if sample.components().any(|c| c == std::path::Component::ParentDir) {
            return Err(format!(
                "{s:?} has a `..` component; output names must stay inside output.dir"
            ));
        }
        Ok(t)
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn render(&self, input: &Path, index: usize, model: &str) -> String {
        let stem = input.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let name = input.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let ext = input.extension().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        self.parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.clone(),
                Part::Field("stem") => stem.clone(),
                Part::Field("name") => name.clone(),
                Part::Field("ext") => ext.clone(),
                Part::Field("model") => model.to_string(),
                Part::Field(_) => index.to_string(),
            })
            .collect()
    }

    /// When the extension does not depend on the input, checks now that it names a format.
    pub fn check_format(&self) -> Result<(), String> {
        let a = self.render(Path::new("a.png"), 0, "m");
        let b = self.render(Path::new("b.jpg"), 0, "m");
        let ext = |s: &str| Path::new(s).extension().map(|e| e.to_os_string());
        if ext(&a) == ext(&b) {
            crate::imageio::format_for(Path::new(&a)).map_err(|_| {
                format!(
                    "cannot tell the output format from the name's extension (use one of: {})",
                    crate::imageio::EXTENSIONS.join(", ")
                )
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_placeholders() {
        let t = NameTemplate::parse("{stem}_{model}-{index}.{ext}").unwrap();
        assert_eq!(t.render(Path::new("/x/a.b.jpg"), 7, "facades"), "a.b_facades-7.jpg");
        assert_eq!(
            NameTemplate::parse("{name}").unwrap().render(Path::new("d/p.png"), 0, ""),
            "p.png"
        );
        assert!(NameTemplate::parse("{nope}.png")
            .unwrap_err()
            .contains("valid: {stem} {name} {ext} {model} {index}"));
        assert!(NameTemplate::parse("{stem").is_err());
        assert!(NameTemplate::parse("{stem}.gif").unwrap().check_format().is_err());
        assert!(NameTemplate::parse("{stem}").unwrap().check_format().is_err());
        assert!(NameTemplate::parse("{name}").unwrap().check_format().is_ok());
    }
}
