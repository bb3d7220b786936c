//! Provider-neutral answer generation: the deterministic answer text, token
//! usage and how a stream splits the text into pieces. Each wire format
//! (OpenAI today; Anthropic and Gemini later) extracts a [`Prompt`] from its
//! request and renders these results in its own shape.

use std::ops::Range;

/// How many characters of the last user message the answer quotes.
pub const QUOTE_CHARS: usize = 200;

/// What the answer depends on, extracted from a request.
#[derive(Debug, Default)]
pub struct Prompt {
    /// Text of the last user message (text parts joined by a space), already
    /// cut to [`QUOTE_CHARS`] characters.
    pub last_user_text: String,
    /// Number of image parts in the last user message.
    pub last_user_images: usize,
    /// Bytes of message text in the whole request (for `prompt_tokens`).
    pub text_bytes: usize,
}

impl Prompt {
    /// Appends `text` to the quoted last-user text, respecting [`QUOTE_CHARS`].
    /// `separate` puts a space before it when something is already there.
    pub fn push_user_text(&mut self, text: &str, separate: bool) {
        let used = self.last_user_text.chars().count();
        let mut room = QUOTE_CHARS.saturating_sub(used);
        if separate && !self.last_user_text.is_empty() && room > 0 {
            self.last_user_text.push(' ');
            room -= 1;
        }
        let cut = text.char_indices().nth(room).map_or(text.len(), |(i, _)| i);
        self.last_user_text.push_str(&text[..cut]);
    }

    pub fn prompt_tokens(&self) -> u64 {
        (self.text_bytes as u64).div_ceil(4)
    }
}

/// `Answer #<n> to: <text>` plus ` [N image(s)]` when the message had images.
pub fn answer_text(n: u64, prompt: &Prompt) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(32 + prompt.last_user_text.len());
    let _ = write!(s, "Answer #{n} to: {}", prompt.last_user_text);
    if prompt.last_user_images > 0 {
        let _ = write!(s, " [{} image(s)]", prompt.last_user_images);
    }
    s
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

impl Usage {
    pub fn new(prompt: &Prompt, answer: &str) -> Usage {
        Usage { prompt_tokens: prompt.prompt_tokens(), completion_tokens: answer.split_whitespace().count() as u64 }
    }

    pub fn total(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}

/// Splits `text` into stream pieces whose concatenation is `text`.
/// `None`: one piece per word (each word with the whitespace before it).
/// `Some(k)`: `k` pieces of (almost) equal character counts, `k` clamped to
/// `1..=chars`.
pub fn split(text: &str, chunks: Option<usize>) -> Vec<Range<usize>> {
    match chunks {
        None => split_words(text),
        Some(k) => split_even(text, k),
    }
}

fn split_words(text: &str) -> Vec<Range<usize>> {
    let mut starts = Vec::new();
    let mut in_word = false;
    let mut word_start_ws = 0; // where the whitespace before the current word begins
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            if in_word {
                in_word = false;
                word_start_ws = i;
            }
        } else if !in_word {
            in_word = true;
            starts.push(if starts.is_empty() { 0 } else { word_start_ws });
        }
    }
    if starts.is_empty() {
        return std::iter::once(0..text.len()).collect();
    }
    let mut ranges: Vec<Range<usize>> = starts.windows(2).map(|w| w[0]..w[1]).collect();
    if let Some(&last) = starts.last() {
        ranges.push(last..text.len());
    }
    ranges
}

fn split_even(text: &str, k: usize) -> Vec<Range<usize>> {
    let chars = text.chars().count();
    if chars == 0 {
        return std::iter::once(0..text.len()).collect();
    }
    let k = k.clamp(1, chars);
    let mut bounds = Vec::with_capacity(k + 1);
    let mut next = 0; // index of the next boundary to place
    for (ci, (bi, _)) in text.char_indices().enumerate() {
        while next < k && next * chars / k == ci {
            bounds.push(bi);
            next += 1;
        }
    }
    bounds.push(text.len());
    bounds.windows(2).map(|w| w[0]..w[1]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(text: &str, k: Option<usize>) -> Vec<&str> {
        split(text, k).into_iter().map(|r| &text[r]).collect()
    }

    #[test]
    fn word_split() {
        assert_eq!(pieces("Answer #1 to: hi", None), ["Answer", " #1", " to:", " hi"]);
        assert_eq!(pieces("Answer #1 to: ", None), ["Answer", " #1", " to: "]);
        assert_eq!(pieces("  a  b ", None), ["  a", "  b "]);
        assert_eq!(pieces("", None), [""]);
    }

    #[test]
    fn even_split() {
        assert_eq!(pieces("abcdef", Some(3)), ["ab", "cd", "ef"]);
        assert_eq!(pieces("abcde", Some(2)), ["ab", "cde"]);
        assert_eq!(pieces("ab", Some(9)), ["a", "b"]);
        assert_eq!(pieces("héllo", Some(5)), ["h", "é", "l", "l", "o"]);
        assert_eq!(pieces("abc", Some(1)), ["abc"]);
    }

    #[test]
    fn quoting_and_usage() {
        let mut p = Prompt::default();
        p.push_user_text(&"x".repeat(150), true);
        p.push_user_text(&"y".repeat(100), true);
        assert_eq!(p.last_user_text.chars().count(), QUOTE_CHARS);
        assert!(p.last_user_text.contains("x y"));
        p.last_user_images = 2;
        p.text_bytes = 9;
        let a = answer_text(7, &p);
        assert!(a.starts_with("Answer #7 to: xxx"));
        assert!(a.ends_with(" [2 image(s)]"));
        let u = Usage::new(&p, "one two  three");
        assert_eq!((u.prompt_tokens, u.completion_tokens, u.total()), (3, 3, 6));
    }
}
