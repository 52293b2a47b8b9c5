//! How text is cut into the words the index keys: runs of letters and digits, as most
//! scripts separate words with spaces or punctuation; but Chinese and Japanese write
//! words side by side, and Korean attaches particles to them, so a run of those
//! characters becomes its overlapping pairs ("北京开会" → 北京, 京开, 开会). A query is
//! cut the same way, so a word found anywhere inside such a run matches; a lone
//! character stays one word.

use tantivy::tokenizer::{Token, TokenStream, Tokenizer};

/// Whether a character is of a script written without spaces between words: Han
/// ideographs, kana, Hangul.
fn paired(c: char) -> bool {
    matches!(u32::from(c),
        0x3040..=0x30FF   // Hiragana, Katakana
        | 0x3400..=0x4DBF // CJK Extension A
        | 0x4E00..=0x9FFF // CJK Unified Ideographs
        | 0xAC00..=0xD7AF // Hangul syllables
        | 0xF900..=0xFAFF // CJK Compatibility Ideographs
        | 0x20000..=0x2FA1F) // CJK Extensions B to F, Compatibility Supplement
}

/// The tokenizer: words, and pairs within runs of [`paired`] characters.
#[derive(Clone, Default)]
pub struct Words;

impl Tokenizer for Words {
    type TokenStream<'a> = Cut;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> Cut {
        Cut {
            tokens: cut(text),
            next: 0,
        }
    }
}

/// Every token of a text, cut at once.
pub struct Cut {
    tokens: Vec<Token>,
    next: usize,
}

impl TokenStream for Cut {
    fn advance(&mut self) -> bool {
        self.next += 1;
        self.next <= self.tokens.len()
    }

    fn token(&self) -> &Token {
        &self.tokens[self.next - 1]
    }

    fn token_mut(&mut self) -> &mut Token {
        &mut self.tokens[self.next - 1]
    }
}

fn cut(text: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut push = |from: usize, to: usize| {
        tokens.push(Token {
            offset_from: from,
            offset_to: to,
            position: tokens.len(),
            text: text[from..to].to_owned(),
            position_length: 1,
        });
    };
    // The characters of the current run of paired ones (offset, char), and where the
    // current word of other letters began.
    let mut run: Vec<(usize, char)> = Vec::new();
    let mut word: Option<usize> = None;
    let flush_run = |run: &mut Vec<(usize, char)>, push: &mut dyn FnMut(usize, usize)| {
        match run.as_slice() {
            [] => {}
            [(at, c)] => push(*at, at + c.len_utf8()),
            pairs => {
                for pair in pairs.windows(2) {
                    let (from, _) = pair[0];
                    let (at, c) = pair[1];
                    push(from, at + c.len_utf8());
                }
            }
        }
        run.clear();
    };
    for (at, c) in text.char_indices() {
        if paired(c) {
            if let Some(from) = word.take() {
                push(from, at);
            }
            run.push((at, c));
        } else if c.is_alphanumeric() {
            flush_run(&mut run, &mut push);
            word.get_or_insert(at);
        } else {
            flush_run(&mut run, &mut push);
            if let Some(from) = word.take() {
                push(from, at);
            }
        }
    }
    flush_run(&mut run, &mut push);
    if let Some(from) = word {
        push(from, text.len());
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        cut(text).into_iter().map(|token| token.text).collect()
    }

    #[test]
    fn words_are_cut_at_spaces_and_runs_of_ideographs_into_pairs() {
        assert_eq!(words("Hello, world! 42"), ["Hello", "world", "42"]);
        assert_eq!(
            words("明天去北京开会"),
            ["明天", "天去", "去北", "北京", "京开", "开会"]
        );
        assert_eq!(words("会"), ["会"]);
        assert_eq!(words("meet在北京ok"), ["meet", "在北", "北京", "ok"]);
        assert_eq!(
            words("東京で会いましょう"),
            [
                "東京", "京で", "で会", "会い", "いま", "まし", "しょ", "ょう"
            ]
        );
        assert_eq!(
            words("서울에서 만나요"),
            ["서울", "울에", "에서", "만나", "나요"]
        );
        assert!(words(" ,. ").is_empty());
    }
}
