//! The text of a generation as it grows: what may be shown so far (never half a UTF-8 character,
//! never the beginning of a stop string that the next tokens may complete) and where a stop
//! string cuts it.

/// Incremental text with stop strings.
#[derive(Clone, Debug, Default)]
pub struct TextStream {
    stop: Vec<String>,
    /// Bytes of the text already handed out.
    shown: usize,
}

/// What an update of the text gives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Update {
    /// Text to show now (may be empty).
    pub piece: String,
    /// The generation's final text, when a stop string ended it (cut before the stop string).
    pub stopped: Option<String>,
}

impl TextStream {
    /// A stream that ends at the first of `stop` (empty strings are ignored).
    pub fn new(stop: &[String]) -> TextStream {
        TextStream { stop: stop.iter().filter(|s| !s.is_empty()).cloned().collect(), shown: 0 }
    }

    /// The generation's whole text so far is `text`: returns the part that can be shown now and,
    /// when a stop string occurs in it, the final text.
    pub fn update(&mut self, text: &str) -> Update {
        let hit = self.stop.iter().filter_map(|s| text.find(s.as_str())).min();
        if let Some(cut) = hit {
            let cut = cut.max(self.shown).min(text.len());
            let piece = text.get(self.shown..cut).unwrap_or("").to_string();
            self.shown = cut;
            return Update { piece, stopped: Some(text[..cut].to_string()) };
        }
        // Hold back an unfinished character and any tail that could begin a stop string.
        let mut end = text.trim_end_matches('\u{FFFD}').len();
        for s in &self.stop {
            for (i, _) in s.char_indices().skip(1) {
                if text[..end].ends_with(&s[..i]) {
                    end = end.min(text.len() - i);
                }
            }
        }
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let end = end.max(self.shown);
        let piece = text.get(self.shown..end).unwrap_or("").to_string();
        self.shown = end;
        Update { piece, stopped: None }
    }

    /// The rest of `text` once generation ended for another reason.
    pub fn finish(&mut self, text: &str) -> String {
        let piece = text.get(self.shown..).unwrap_or("").to_string();
        self.shown = text.len();
        piece
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_back_possible_stop_prefixes_and_cuts_at_the_stop() {
        let mut s = TextStream::new(&["\nUser:".to_string()]);
        assert_eq!(s.update("Hello").piece, "Hello");
        assert_eq!(s.update("Hello\nUs").piece, "");
        // Not the stop string after all: the held text comes out.
        assert_eq!(s.update("Hello\nUsually").piece, "\nUsually");
        let u = s.update("Hello\nUsually\nUser: hi");
        assert_eq!(u.piece, "");
        assert_eq!(u.stopped.as_deref(), Some("Hello\nUsually"));
    }

    #[test]
    fn never_shows_half_a_character() {
        let mut s = TextStream::new(&[]);
        assert_eq!(s.update("caf\u{FFFD}").piece, "caf");
        assert_eq!(s.update("café").piece, "é");
        assert_eq!(s.finish("café!"), "!");
    }
}
