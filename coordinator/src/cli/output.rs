//! How reads are printed: aligned columns as kubectl prints them, or the objects themselves as
//! JSON or YAML, which parse back into the same objects.

use std::io::Write;

use clap::ValueEnum;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Serialize;
use serde_json::json;

use super::error::CliError;

/// The output format of a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns, or for `describe` a readable summary.
    Table,
    /// The objects as JSON; a list is a `kind: List`.
    Json,
    /// The objects as YAML; a list is a `kind: List`.
    Yaml,
}

/// Rows under a header, printed in aligned columns.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Self {
            rows: vec![header.iter().map(|h| (*h).to_owned()).collect()],
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, its columns three spaces apart.
    pub fn render(&self) -> String {
        let mut writer = tabwriter::TabWriter::new(Vec::new()).padding(3);
        for row in &self.rows {
            let _ = writeln!(writer, "{}", row.join("\t"));
        }
        let bytes = writer.into_inner().unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// Prints one object, or several as a List, in `format`; `table` makes the rows.
pub fn print<K: Serialize>(
    items: &[K],
    one: bool,
    format: Format,
    table: impl FnOnce(&[K]) -> Table,
) -> Result<(), CliError> {
    let value = match (one, items) {
        (true, [item]) => serde_json::to_value(item),
        _ => serde_json::to_value(items)
            .map(|items| json!({"apiVersion": "v1", "kind": "List", "items": items})),
    }
    .map_err(|err| CliError::Refused(format!("cannot encode the output: {err}")))?;
    let text = match format {
        Format::Table => table(items).render(),
        Format::Json => serde_json::to_string_pretty(&value)
            .map(|text| text + "\n")
            .map_err(|err| CliError::Refused(format!("cannot encode the output: {err}")))?,
        Format::Yaml => serde_yaml::to_string(&value)
            .map_err(|err| CliError::Refused(format!("cannot encode the output: {err}")))?,
    };
    write_out(&text)
}

/// Writes `text` to stdout; a closed pipe (`ferry … | head`) is not an error.
pub fn write_out(text: &str) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(CliError::io("cannot write to stdout")(err))
        }
        _ => Ok(()),
    }
}

/// How long ago `time` was, as kubectl's AGE column says it: `45s`, `12m`, `5h`, `3d`.
pub fn age(time: Option<&Time>) -> String {
    let Some(time) = time else {
        return "<unknown>".to_owned();
    };
    let seconds = (Timestamp::now().as_second() - time.0.as_second()).max(0);
    short_duration(u64::try_from(seconds).unwrap_or_default())
}

/// A duration in its largest whole unit, as kubectl prints ages.
pub fn short_duration(seconds: u64) -> String {
    match seconds {
        0..120 => format!("{seconds}s"),
        120..7200 => format!("{}m", seconds / 60),
        7200..172_800 => format!("{}h", seconds / 3600),
        _ => format!("{}d", seconds / 86_400),
    }
}

/// A timestamp in RFC 3339, or `<none>`.
pub fn time(time: Option<&Time>) -> String {
    time.map_or_else(|| "<none>".to_owned(), |t| t.0.to_string())
}

/// A list as `a, b, c`, or `<none>` when empty.
pub fn list(items: &[String]) -> String {
    if items.is_empty() {
        "<none>".to_owned()
    } else {
        items.join(", ")
    }
}

/// Bytes in binary units, such as `1.50 MiB`.
pub fn bytes(count: u64) -> String {
    indicatif::BinaryBytes(count).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_three_spaces_apart() {
        let mut table = Table::new(&["NAME", "PHASE"]);
        table.row(vec!["nightly-1".into(), "Completed".into()]);
        table.row(vec!["b".into(), "InProgress".into()]);
        assert_eq!(
            table.render(),
            "NAME        PHASE\nnightly-1   Completed\nb           InProgress\n"
        );
    }

    #[test]
    fn ages_are_said_in_their_largest_unit() {
        let cases = [
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (7199, "119m"),
            (7200, "2h"),
            (172_799, "47h"),
            (172_800, "2d"),
        ];
        for (seconds, said) in cases {
            assert_eq!(short_duration(seconds), said, "{seconds}");
        }
    }
}
