//! Canonical dumps of a database: the rows of the tables that matter as JSON texts, without the
//! columns that legitimately differ between two histories (each test names them and says why),
//! with generated ids replaced by stable labels, sorted; and the comparison of two dumps.

use std::collections::BTreeMap;

use serde_json::Value;
use store::testing::TestDatabase;

/// What to read of one table.
pub struct Table {
    /// The table's name in reports.
    pub name: &'static str,
    /// The query reading it (its columns become the keys of each row).
    pub query: &'static str,
    /// Columns left out.
    pub drop: &'static [&'static str],
    /// Keys left out wherever they appear inside JSON columns.
    pub drop_nested: &'static [&'static str],
}

/// Rows of each table, canonical and sorted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dump(pub BTreeMap<&'static str, Vec<String>>);

fn strip(v: &mut Value, keys: &[&str]) {
    match v {
        Value::Object(map) => {
            map.retain(|k, _| !keys.contains(&k.as_str()));
            map.values_mut().for_each(|v| strip(v, keys));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| strip(v, keys)),
        _ => {}
    }
}

/// Reads `tables` from `db`, replacing each `(id, label)` of `labels` wherever it appears.
pub async fn dump(db: &TestDatabase, tables: &[Table], labels: &[(String, String)]) -> Dump {
    let client = db.client().await;
    let mut out = BTreeMap::new();
    for t in tables {
        let rows = client
            .query(&format!("SELECT to_jsonb(t)::text FROM ({}) t", t.query), &[])
            .await
            .unwrap_or_else(|e| panic!("dump {}: {e}", t.name));
        let mut texts: Vec<String> = rows
            .iter()
            .map(|r| {
                let mut row: Value = serde_json::from_str(r.get::<_, &str>(0)).expect("a JSON row");
                if let Value::Object(map) = &mut row {
                    map.retain(|k, _| !t.drop.contains(&k.as_str()));
                }
                strip(&mut row, t.drop_nested);
                let mut text = row.to_string();
                for (id, label) in labels {
                    text = text.replace(id.as_str(), label);
                }
                text
            })
            .collect();
        texts.sort();
        out.insert(t.name, texts);
    }
    Dump(out)
}

/// Fails with the rows that differ, table by table, when `b` is not `a`.
pub fn assert_same(a: &Dump, b: &Dump, what: &str) {
    let mut report = String::new();
    for (table, rows_a) in &a.0 {
        let rows_b = b.0.get(table).cloned().unwrap_or_default();
        let only_a: Vec<&String> = rows_a.iter().filter(|r| !rows_b.contains(r)).collect();
        let only_b: Vec<&String> = rows_b.iter().filter(|r| !rows_a.contains(r)).collect();
        if only_a.is_empty() && only_b.is_empty() && rows_a.len() == rows_b.len() {
            continue;
        }
        report.push_str(&format!(
            "\n{table}: {} rows once in order, {} rows twice out of order\n",
            rows_a.len(),
            rows_b.len()
        ));
        for r in only_a {
            report.push_str(&format!("  - {r}\n"));
        }
        for r in only_b {
            report.push_str(&format!("  + {r}\n"));
        }
    }
    assert!(
        report.is_empty(),
        "{what}: the database differs from single in-order delivery ('-' in order only, '+' out of order only):{report}"
    );
}
