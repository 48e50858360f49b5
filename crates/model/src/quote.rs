//! How messages show values a user wrote: briefly. A megabyte value is not echoed back in
//! an error about it.

use std::borrow::Cow;

/// How much of a value a message quotes.
pub const QUOTE_MAX: usize = 80;

/// A message is cut here, whatever it quotes.
const MESSAGE_MAX: usize = 1000;

/// `s` as a message shows it: whole up to [`QUOTE_MAX`] characters, else its start, an
/// ellipsis and its length (a value of a megabyte is not echoed back).
pub fn clip(s: &str) -> Cow<'_, str> {
    match s.char_indices().nth(QUOTE_MAX) {
        None => Cow::Borrowed(s),
        Some((cut, _)) => Cow::Owned(format!("{}… ({} bytes)", &s[..cut], s.len())),
    }
}

/// A message with every quoted value and every long word clipped, and the whole cut at
/// [`MESSAGE_MAX`] characters.
pub fn clip_message(message: String) -> String {
    if message.len() <= 2 * QUOTE_MAX {
        return message;
    }
    // Quoted values ("..." runs) and, outside quotes, words longer than the limit.
    let mut out = String::with_capacity(message.len().min(4 * MESSAGE_MAX));
    for (i, part) in message.split('"').enumerate() {
        if i > 0 {
            out.push('"');
        }
        if i % 2 == 1 {
            out.push_str(&clip(part));
        } else {
            let words: Vec<Cow<'_, str>> = part.split(' ').map(clip).collect();
            out.push_str(&words.join(" "));
        }
    }
    if let Some((cut, _)) = out.char_indices().nth(MESSAGE_MAX) {
        out.truncate(cut);
        out.push('…');
    }
    out
}
