//! Class labels: the ordered map between class names and ids, and how it is inferred from raw labels.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::DataError;

/// The classes of a dataset: id `i` is the class named `names[i]`.
///
/// Serialized as a Hugging Face style `id2label` object, `{"0": "rotten", "1": "fresh"}`, so it can go
/// into a run's config JSON and next to adapters unchanged; deserializing checks that the ids are
/// `0..n-1`, that there are at least two classes and that the names are distinct and non-empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "BTreeMap<usize, String>", into = "BTreeMap<usize, String>")]
pub struct LabelMap {
    names: Vec<String>,
}

impl LabelMap {
    /// Builds a map from class names in id order (`names[0]` gets id 0).
    ///
    /// Errors with [`DataError::InvalidLabelMap`] on fewer than two names, an empty name or a duplicate.
    pub fn new(names: Vec<String>) -> Result<Self, DataError> {
        Self::validated(names, "LabelMap::new")
    }

    fn validated(names: Vec<String>, origin: &str) -> Result<Self, DataError> {
        let invalid = |reason: String| DataError::InvalidLabelMap { origin: origin.to_string(), reason };
        if names.len() < 2 {
            return Err(invalid(format!("it has {} class(es), {:?}", names.len(), names)));
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (id, name) in names.iter().enumerate() {
            if name.trim().is_empty() {
                return Err(invalid(format!("class {id} has an empty name")));
            }
            if let Some(first) = seen.insert(name, id) {
                return Err(invalid(format!("classes {first} and {id} are both named {name:?}")));
            }
        }
        Ok(Self { names })
    }

    /// The number of classes (always at least 2).
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Always false: a label map has at least two classes. Present for API symmetry with [`Self::len`].
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The class names in id order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The name of class `id`, or `None` when `id >= len()`.
    pub fn name(&self, id: usize) -> Option<&str> {
        self.names.get(id).map(String::as_str)
    }

    /// The id of a raw label as written in a data file.
    ///
    /// A raw label that equals a class name resolves to that class; otherwise an integer `0..n-1`
    /// resolves to itself. Anything else is [`DataError::UnknownLabel`] (without a location: loaders
    /// use [`Self::id_at`]).
    pub fn id(&self, raw: &str) -> Result<usize, DataError> {
        self.resolve(raw).ok_or_else(|| self.unknown(raw, None, None))
    }

    /// Like [`Self::id`], naming the file and 1-based line in the error.
    pub fn id_at(&self, raw: &str, path: &Path, line: Option<usize>) -> Result<usize, DataError> {
        self.resolve(raw).ok_or_else(|| self.unknown(raw, Some(path.to_path_buf()), line))
    }

    /// The HF `id2label` map: id → name.
    pub fn id2label(&self) -> BTreeMap<usize, String> {
        self.names.iter().cloned().enumerate().collect()
    }

    /// The HF `label2id` map: name → id.
    pub fn label2id(&self) -> BTreeMap<String, usize> {
        self.names.iter().cloned().enumerate().map(|(id, name)| (name, id)).collect()
    }

    fn resolve(&self, raw: &str) -> Option<usize> {
        let raw = raw.trim();
        if let Some(id) = self.names.iter().position(|name| name == raw) {
            return Some(id);
        }
        raw.parse::<usize>().ok().filter(|&id| id < self.names.len())
    }

    pub(crate) fn unknown(&self, raw: &str, path: Option<PathBuf>, line: Option<usize>) -> DataError {
        DataError::UnknownLabel { label: raw.to_string(), known: self.names.clone(), path, line }
    }
}

impl TryFrom<BTreeMap<usize, String>> for LabelMap {
    type Error = DataError;

    fn try_from(id2label: BTreeMap<usize, String>) -> Result<Self, DataError> {
        if let Some((index, (id, _))) = id2label.iter().enumerate().find(|(index, (id, _))| index != *id) {
            return Err(DataError::InvalidLabelMap {
                origin: "JSON".to_string(),
                reason: format!("id {index} is missing (the next id is {id})"),
            });
        }
        Self::validated(id2label.into_values().collect(), "JSON")
    }
}

impl From<LabelMap> for BTreeMap<usize, String> {
    fn from(map: LabelMap) -> Self {
        map.id2label()
    }
}

/// One example as read from a file, before its label is resolved to an id.
#[derive(Debug, Clone)]
pub(crate) struct RawExample {
    /// The text.
    pub text: String,
    /// The label exactly as written (trimmed), e.g. "1" or "positive".
    pub label: String,
    /// The `label_name` field, when the file has one and it is not empty.
    pub label_name: Option<String>,
    /// 1-based line number where the record starts.
    pub line: usize,
}

/// Resolves raw labels to ids: with the given map, or with a map inferred from the labels themselves.
///
/// Inference: if every raw label is an integer, the ids are the integers (they must be `0..n-1`) and the
/// names come from `label_name` when present, else the integer strings; otherwise ids go to the distinct
/// labels in sorted order. With a given map, a row that has both an integer label and a `label_name` is
/// read as id + name (the layout [`super::write_csv`] writes) and the name must match the map's.
pub(crate) fn resolve(raws: &[RawExample], path: &Path, given: Option<&LabelMap>) -> Result<(LabelMap, Vec<usize>), DataError> {
    for raw in raws {
        let named = given.is_some_and(|m| m.names().iter().any(|n| n == &raw.label));
        if !named && is_missing_value(&raw.label) {
            return Err(DataError::MissingLabel { path: path.to_path_buf(), line: raw.line, label: raw.label.clone() });
        }
    }
    match given {
        Some(map) => Ok((map.clone(), resolve_with(map, raws, path)?)),
        None => infer(raws, path),
    }
}

/// Whether a label is one of the ways data tools write a missing value.
fn is_missing_value(label: &str) -> bool {
    ["nan", "null", "none", "na", "n/a", "<na>", "nat"].contains(&label.trim().to_ascii_lowercase().as_str())
}

fn resolve_with(map: &LabelMap, raws: &[RawExample], path: &Path) -> Result<Vec<usize>, DataError> {
    raws.iter()
        .map(|raw| {
            let Some(name) = &raw.label_name else {
                return map.id_at(&raw.label, path, Some(raw.line));
            };
            let id = match raw.label.parse::<usize>() {
                Ok(id) if id < map.len() => id,
                Ok(_) => return Err(map.unknown(&raw.label, Some(path.to_path_buf()), Some(raw.line))),
                Err(_) => map.id_at(&raw.label, path, Some(raw.line))?,
            };
            let expected = &map.names[id];
            if expected != name {
                return Err(DataError::LabelNameConflict {
                    path: path.to_path_buf(),
                    line: raw.line,
                    id,
                    name: name.clone(),
                    expected: expected.clone(),
                    expected_from: "in the label map".to_string(),
                });
            }
            Ok(id)
        })
        .collect()
}

fn infer(raws: &[RawExample], path: &Path) -> Result<(LabelMap, Vec<usize>), DataError> {
    let distinct: BTreeSet<&str> = raws.iter().map(|raw| raw.label.as_str()).collect();
    if distinct.len() < 2 {
        return Err(DataError::OneClass { path: path.to_path_buf(), label: distinct.first().map_or_else(String::new, |s| s.to_string()) });
    }
    let integers: Option<Vec<i64>> = raws.iter().map(|raw| raw.label.parse::<i64>().ok()).collect();
    let origin = path.display().to_string();
    match integers {
        Some(values) => {
            let mut ids = Vec::with_capacity(values.len());
            for (raw, &value) in raws.iter().zip(&values) {
                let id = usize::try_from(value).map_err(|_| DataError::NegativeLabel {
                    path: path.to_path_buf(),
                    line: raw.line,
                    label: value,
                })?;
                ids.push(id);
            }
            let found: Vec<usize> = ids.iter().copied().collect::<BTreeSet<_>>().into_iter().collect();
            if found.len() < 2 {
                return Err(DataError::OneClass {
                    path: path.to_path_buf(),
                    label: raws.first().map_or_else(String::new, |raw| raw.label.clone()),
                });
            }
            if let Some(missing) = found.iter().enumerate().find(|(i, id)| i != *id).map(|(i, _)| i) {
                return Err(DataError::LabelGap { path: path.to_path_buf(), missing, found });
            }
            // Names from the label_name field, one per id, first occurrence wins and conflicts are errors.
            let mut named: Vec<Option<(String, usize)>> = vec![None; found.len()];
            for (raw, &id) in raws.iter().zip(&ids) {
                let Some(name) = &raw.label_name else {
                    continue;
                };
                match &named[id] {
                    None => named[id] = Some((name.clone(), raw.line)),
                    Some((first, first_line)) if first != name => {
                        return Err(DataError::LabelNameConflict {
                            path: path.to_path_buf(),
                            line: raw.line,
                            id,
                            name: name.clone(),
                            expected: first.clone(),
                            expected_from: format!("on line {first_line}"),
                        });
                    }
                    Some(_) => {}
                }
            }
            let names = named.into_iter().enumerate().map(|(id, name)| name.map_or_else(|| id.to_string(), |(name, _)| name)).collect();
            Ok((LabelMap::validated(names, &origin)?, ids))
        }
        None => {
            let names: Vec<String> = distinct.iter().map(|s| s.to_string()).collect();
            let index: HashMap<&str, usize> = distinct.iter().enumerate().map(|(id, s)| (*s, id)).collect();
            let ids = raws.iter().map(|raw| index[raw.label.as_str()]).collect();
            Ok((LabelMap::validated(names, &origin)?, ids))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(label: &str, name: Option<&str>, line: usize) -> RawExample {
        RawExample { text: format!("text {line}"), label: label.to_string(), label_name: name.map(str::to_string), line }
    }

    fn path() -> &'static Path {
        Path::new("data.csv")
    }

    #[test]
    fn integer_labels_are_their_own_ids() {
        let raws = [raw("2", None, 2), raw("0", None, 3), raw("1", None, 4)];
        let (map, ids) = resolve(&raws, path(), None).unwrap();
        assert_eq!(map.names(), ["0", "1", "2"]);
        assert_eq!(ids, [2, 0, 1]);
    }

    #[test]
    fn integer_labels_take_names_from_label_name() {
        let raws = [raw("1", Some("fresh"), 2), raw("0", Some("rotten"), 3), raw("1", Some("fresh"), 4)];
        let (map, ids) = resolve(&raws, path(), None).unwrap();
        assert_eq!(map.names(), ["rotten", "fresh"]);
        assert_eq!(ids, [1, 0, 1]);
    }

    #[test]
    fn conflicting_label_names_are_an_error() {
        let raws = [raw("1", Some("fresh"), 2), raw("0", Some("rotten"), 3), raw("1", Some("good"), 9)];
        let err = resolve(&raws, path(), None).unwrap_err();
        assert!(
            matches!(&err, DataError::LabelNameConflict { line: 9, id: 1, name, expected, .. }
                if name == "good" && expected == "fresh"),
            "{err}"
        );
        assert!(err.to_string().contains("\"fresh\" on line 2"), "{err}");
    }

    #[test]
    fn string_labels_get_ids_in_sorted_order() {
        let raws = [raw("pos", None, 2), raw("neutral", None, 3), raw("neg", None, 4)];
        let (map, ids) = resolve(&raws, path(), None).unwrap();
        assert_eq!(map.names(), ["neg", "neutral", "pos"]);
        assert_eq!(ids, [2, 1, 0]);
    }

    #[test]
    fn gap_in_integer_labels_names_the_missing_id() {
        let raws = [raw("0", None, 2), raw("2", None, 3), raw("3", None, 4)];
        let err = resolve(&raws, path(), None).unwrap_err();
        assert!(matches!(&err, DataError::LabelGap { missing: 1, found, .. } if found == &[0, 2, 3]), "{err}");
        let raws = [raw("1", None, 2), raw("2", None, 3)];
        assert!(matches!(resolve(&raws, path(), None), Err(DataError::LabelGap { missing: 0, .. })));
    }

    #[test]
    fn negative_label_is_an_error() {
        let raws = [raw("0", None, 2), raw("-1", None, 3)];
        assert!(matches!(resolve(&raws, path(), None), Err(DataError::NegativeLabel { line: 3, label: -1, .. })));
    }

    #[test]
    fn one_class_is_an_error() {
        let raws = [raw("pos", None, 2), raw("pos", None, 3)];
        let err = resolve(&raws, path(), None).unwrap_err();
        assert!(matches!(&err, DataError::OneClass { label, .. } if label == "pos"), "{err}");
    }

    #[test]
    fn given_map_resolves_names_and_ids_and_rejects_unknown_labels() {
        let map = LabelMap::new(vec!["rotten".into(), "fresh".into()]).unwrap();
        assert_eq!(map.id("fresh").unwrap(), 1);
        assert_eq!(map.id("0").unwrap(), 0);
        let raws = [raw("fresh", None, 2), raw("0", None, 3), raw("1", Some("fresh"), 4)];
        let (got, ids) = resolve(&raws, path(), Some(&map)).unwrap();
        assert_eq!(got, map);
        assert_eq!(ids, [1, 0, 1]);

        let err = resolve(&[raw("2", None, 5)], path(), Some(&map)).unwrap_err();
        assert!(
            matches!(&err, DataError::UnknownLabel { label, known, line: Some(5), path: Some(_) }
                if label == "2" && known == &["rotten", "fresh"]),
            "{err}"
        );
        assert!(matches!(map.id("meh"), Err(DataError::UnknownLabel { path: None, line: None, .. })));
    }

    #[test]
    fn given_map_checks_label_names() {
        let map = LabelMap::new(vec!["rotten".into(), "fresh".into()]).unwrap();
        let err = resolve(&[raw("1", Some("rotten"), 4)], path(), Some(&map)).unwrap_err();
        assert!(matches!(&err, DataError::LabelNameConflict { id: 1, expected, .. } if expected == "fresh"), "{err}");
    }

    #[test]
    fn id_plus_label_name_rows_resolve_by_id_even_when_names_look_like_ids() {
        // A string-labelled map whose first name is "1": a written split stores id 1 as ("1", "two").
        let map = LabelMap::new(vec!["1".into(), "two".into()]).unwrap();
        let (_, ids) = resolve(&[raw("1", Some("two"), 2), raw("0", Some("1"), 3)], path(), Some(&map)).unwrap();
        assert_eq!(ids, [1, 0]);
    }

    #[test]
    fn serializes_as_id2label() {
        let map = LabelMap::new(vec!["rotten".into(), "fresh".into()]).unwrap();
        let json = serde_json::to_string(&map).unwrap();
        assert_eq!(json, r#"{"0":"rotten","1":"fresh"}"#);
        let back: LabelMap = serde_json::from_str(&json).unwrap();
        assert_eq!(back, map);
        assert_eq!(map.label2id()["fresh"], 1);
    }

    #[test]
    fn deserialize_validates() {
        for bad in [r#"{"0":"a","2":"b"}"#, r#"{"0":"a"}"#, r#"{"0":"a","1":"a"}"#, r#"{"0":"a","1":""}"#] {
            let err = serde_json::from_str::<LabelMap>(bad).unwrap_err();
            assert!(err.to_string().contains("invalid label map"), "{bad}: {err}");
        }
    }

    #[test]
    fn new_rejects_fewer_than_two_classes() {
        assert!(matches!(LabelMap::new(vec!["only".into()]), Err(DataError::InvalidLabelMap { .. })));
    }
}
