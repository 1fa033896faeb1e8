//! `host train --overwrite`: the training config's `[output] overwrite = true`, set in the
//! config text the plugin receives. The key goes at the end of the `[output]` table (or a new
//! table at the end of the file), so the lines the plugin names in its errors stay those of
//! the user's file wherever possible (`[output]` is usually the last table).

use anyhow::{bail, Result};

fn overwrite_value(text: &str) -> Option<Option<bool>> {
    let table: toml::Table = text.parse().ok()?;
    Some(table.get("output").and_then(|o| o.get("overwrite")).and_then(toml::Value::as_bool))
}

/// `text` with `[output] overwrite = true`. A text that is not valid TOML is returned as it is:
/// the plugin reports its error with the line.
pub fn with_overwrite(text: &str) -> Result<String> {
    let Some(current) = overwrite_value(text) else {
        return Ok(text.to_string());
    };
    match current {
        Some(true) => return Ok(text.to_string()),
        Some(false) => bail!("--overwrite contradicts `[output] overwrite = false` in the config"),
        None => {}
    }
    let lines: Vec<&str> = text.lines().collect();
    let is_header = |l: &str| l.trim_start().starts_with('[');
    let header = lines.iter().position(|l| {
        let l = l.trim();
        l.strip_prefix("[output]")
            .is_some_and(|rest| rest.trim().is_empty() || rest.trim_start().starts_with('#'))
    });
    let edited = match header {
        None => format!(
            "{}{}[output]\noverwrite = true\n",
            text,
            if text.ends_with('\n') || text.is_empty() { "" } else { "\n" }
        ),
        Some(h) => {
            let end = lines
                .iter()
                .skip(h + 1)
                .position(|l| is_header(l))
                .map_or(lines.len(), |p| h + 1 + p);
            let mut out: Vec<&str> = lines[..end].to_vec();
            out.push("overwrite = true");
            out.extend_from_slice(&lines[end..]);
            out.join("\n") + "\n"
        }
    };
    if overwrite_value(&edited) != Some(Some(true)) {
        bail!("cannot add `overwrite = true` to the config's [output] table: add it there instead of passing --overwrite");
    }
    Ok(edited)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_the_key_where_lines_keep_their_numbers() {
        let t = "[train]\nlr = 1e-3\n\n[output]\ndir = \"o\" # here\n";
        assert_eq!(
            with_overwrite(t).unwrap(),
            "[train]\nlr = 1e-3\n\n[output]\ndir = \"o\" # here\noverwrite = true\n"
        );
        let t = "[output]\ndir = \"o\"\n[train]\nlr = 1e-3";
        assert_eq!(
            with_overwrite(t).unwrap(),
            "[output]\ndir = \"o\"\noverwrite = true\n[train]\nlr = 1e-3\n"
        );
        assert_eq!(
            with_overwrite("[train]\nlr = 1").unwrap(),
            "[train]\nlr = 1\n[output]\noverwrite = true\n"
        );
        assert!(with_overwrite("[output]\noverwrite = false\n").is_err());
        assert_eq!(
            with_overwrite("[output]\noverwrite = true\n").unwrap(),
            "[output]\noverwrite = true\n"
        );
        assert_eq!(with_overwrite("not [ toml").unwrap(), "not [ toml");
        assert!(with_overwrite("output = { dir = \"o\" }\n").is_err());
    }
}
