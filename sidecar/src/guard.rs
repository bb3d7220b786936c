//! The semantic-hit guard: a candidate whose embedding is close enough is still refused when
//! the two texts differ in a way embeddings do not see: numbers, units or currencies, colours,
//! sizes, negation, named entities, the order of operands around `to`/`from`/`vs`/`than`, or a
//! pair of opposite words. MiniLM scores "USD to EUR" vs "EUR to USD" at 0.98, above most true
//! paraphrases, so a threshold alone cannot make this call. Word lists are configurable.

use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};

/// Why a candidate was refused (sent back as `guard` in the lookup answer, and counted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    Number,
    Unit,
    Colour,
    Size,
    Negation,
    Entity,
    OperandOrder,
    Opposite,
}

impl Rejection {
    pub fn as_str(&self) -> &'static str {
        match self {
            Rejection::Number => "number",
            Rejection::Unit => "unit",
            Rejection::Colour => "colour",
            Rejection::Size => "size",
            Rejection::Negation => "negation",
            Rejection::Entity => "entity",
            Rejection::OperandOrder => "operand_order",
            Rejection::Opposite => "opposite",
        }
    }
}

/// Guard rules; every list may be replaced in the sidecar's config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuardConfig {
    pub enabled: bool,
    pub numbers: bool,
    pub entities: bool,
    pub negation: bool,
    pub operand_order: bool,
    pub colours: Vec<String>,
    /// Size words; `canon:alias,alias` makes synonyms one size ("large:big").
    pub sizes: Vec<String>,
    pub negations: Vec<String>,
    pub operand_markers: Vec<String>,
    /// Canonical unit -> the words and symbols that name it.
    pub units: BTreeMap<String, Vec<String>>,
    /// Words with opposite meanings in a request ("ascending"/"descending").
    pub opposites: Vec<(String, String)>,
    /// Lowercase names that are entities even when written in lowercase (languages, tools).
    pub known_entities: Vec<String>,
    /// Names of one entity (`javascript:js`): either spelling satisfies the other.
    pub entity_aliases: Vec<String>,
    /// Refuse a candidate that differs from the query by swapping a single content word for
    /// another ("cashmere" for "cotton", "earlier" for "later") in otherwise identical text.
    pub single_substitution: bool,
}

fn words(list: &str) -> Vec<String> {
    list.split_whitespace().map(str::to_string).collect()
}

impl Default for GuardConfig {
    fn default() -> Self {
        let units = [
            ("usd", "usd $ dollar dollars us$ buck bucks"),
            ("eur", "eur € euro euros"),
            ("gbp", "gbp £ sterling quid"),
            ("jpy", "jpy ¥ yen"),
            ("inr", "inr ₹ rupee rupees"),
            ("cad", "cad"),
            ("aud", "aud"),
            ("chf", "chf franc francs"),
            ("km", "km kilometer kilometers kilometre kilometres"),
            ("mile", "mi mile miles"),
            ("nmi", "nautical nmi"),
            ("kcal", "kcal kilocalorie kilocalories calorie calories cal"),
            ("kj", "kj kilojoule kilojoules"),
            ("stone", "st stone stones"),
            ("m", "meter meters metre metres"),
            ("cm", "cm centimeter centimeters centimetre centimetres"),
            ("mm", "mm millimeter millimeters millimetre millimetres"),
            ("inch", "inch inches in\""),
            ("foot", "ft foot feet"),
            ("yard", "yd yard yards"),
            ("kg", "kg kilogram kilograms kilo kilos"),
            ("g", "gram grams"),
            ("lb", "lb lbs pound pounds"),
            ("oz", "oz ounce ounces"),
            ("l", "liter liters litre litres"),
            ("ml", "ml milliliter milliliters millilitre millilitres"),
            ("gallon", "gal gallon gallons"),
            ("celsius", "celsius °c centigrade"),
            ("fahrenheit", "fahrenheit °f"),
            ("kelvin", "kelvin"),
            ("gb", "gb gigabyte gigabytes"),
            ("gib", "gib gibibyte gibibytes"),
            ("mb", "mb megabyte megabytes"),
            ("tb", "tb terabyte terabytes"),
            ("second", "sec secs second seconds"),
            ("minute", "min mins minute minutes"),
            ("hour", "hr hrs hour hours"),
            ("day", "day days"),
            ("week", "week weeks"),
            ("month", "month months monthly"),
            ("year", "year years yearly annual annually"),
            ("mph", "mph"),
            ("kmh", "kmh km/h kph"),
            ("pm", "pm p.m. noon"),
            ("am", "am a.m. midnight"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), words(v)))
        .collect();
        let opposites = [
            ("ascending", "descending"),
            ("asc", "desc"),
            ("increase", "decrease"),
            ("add", "remove"),
            ("add", "delete"),
            ("before", "after"),
            ("minimum", "maximum"),
            ("min", "max"),
            ("enable", "disable"),
            ("encode", "decode"),
            ("encrypt", "decrypt"),
            ("upload", "download"),
            ("import", "export"),
            ("buy", "sell"),
            ("open", "close"),
            ("first", "last"),
            ("largest", "smallest"),
            ("highest", "lowest"),
            ("oldest", "newest"),
            ("start", "stop"),
            ("cancel", "track"),
            ("in", "out"),
            ("pause", "resume"),
            ("accept", "decline"),
            ("cancel", "change"),
            ("men", "women"),
            ("mens", "womens"),
            ("male", "female"),
            ("left", "right"),
            ("up", "down"),
            ("input", "output"),
            ("read", "write"),
            ("push", "pull"),
            ("lower", "upper"),
            ("lowercase", "uppercase"),
            ("inner", "outer"),
            ("shipping", "billing"),
            ("refund", "exchange"),
            ("round", "square"),
            ("leather", "canvas"),
            ("formal", "casual"),
            ("formal", "humorous"),
            ("true", "false"),
            ("public", "private"),
            ("sync", "async"),
            ("synchronous", "asynchronous"),
            ("horizontal", "vertical"),
            ("horizontally", "vertically"),
            ("rows", "columns"),
            ("row", "column"),
            ("keys", "values"),
            ("key", "value"),
            ("merge", "rebase"),
            ("local", "remote"),
            ("cheapest", "fastest"),
            ("domestic", "international"),
            ("weekday", "weekend"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        GuardConfig {
            enabled: true,
            numbers: true,
            entities: true,
            negation: true,
            operand_order: true,
            colours: words(
                "red blue green yellow black white grey gray brown pink purple orange beige navy \
                 teal maroon olive gold golden silver ivory cream tan khaki burgundy turquoise \
                 violet magenta cyan charcoal coral lavender mint mustard rose",
            ),
            sizes: words(
                "small:little,tiny,s medium:m,mid large:big,l xs xl xxl xxxl petite tall mini maxi \
                 midi slim wide narrow oversized compact king queen twin jumbo travel",
            ),
            negations: words(
                "not no never without none nothing nobody neither nor cannot can't don't doesn't \
                 didn't isn't aren't wasn't weren't won't wouldn't shouldn't couldn't haven't \
                 hasn't hadn't excluding except non",
            ),
            operand_markers: words("to into vs versus than over against per in"),
            units,
            opposites,
            known_entities: words(
                "python rust java javascript typescript go golang ruby php kotlin swift scala c# \
                 c++ perl haskell elixir bash powershell sql postgres postgresql mysql sqlite \
                 mongodb redis react vue angular svelte django flask rails spring node nodejs \
                 deno numpy pandas docker kubernetes git linux windows macos ios android \
                 aws azure gcp excel",
            ),
            entity_aliases: words(
                "javascript:js golang:go postgresql:postgres,psql kubernetes:k8s typescript:ts \
                 python:py nodejs:node,node.js csharp:c# cpp:c++ fahrenheit:°f celsius:°c \
                 kilojoule:kj kilocalorie:kcal",
            ),
            single_substitution: true,
        }
    }
}

/// A text broken into what the rules compare.
struct Facts {
    tokens: Vec<String>,
    numbers: BTreeMap<String, usize>,
    units: BTreeSet<String>,
    entities: BTreeSet<String>,
    negated: bool,
    sizes: BTreeSet<String>,
    /// Numbers and entities in order of first appearance (for swapped operands).
    order: Vec<String>,
}

const NUMBER_WORDS: &[(&str, f64)] = &[
    ("zero", 0.0),
    ("two", 2.0),
    ("three", 3.0),
    ("four", 4.0),
    ("five", 5.0),
    ("six", 6.0),
    ("seven", 7.0),
    ("eight", 8.0),
    ("nine", 9.0),
    ("ten", 10.0),
    ("eleven", 11.0),
    ("twelve", 12.0),
    ("thirteen", 13.0),
    ("fourteen", 14.0),
    ("fifteen", 15.0),
    ("sixteen", 16.0),
    ("seventeen", 17.0),
    ("eighteen", 18.0),
    ("nineteen", 19.0),
    ("twenty", 20.0),
    ("thirty", 30.0),
    ("forty", 40.0),
    ("fifty", 50.0),
    ("sixty", 60.0),
    ("seventy", 70.0),
    ("eighty", 80.0),
    ("ninety", 90.0),
    ("hundred", 100.0),
    ("thousand", 1000.0),
    ("million", 1e6),
    ("billion", 1e9),
    ("noon", 12.0),
    ("midnight", 0.0),
    ("dozen", 12.0),
    ("half", 0.5),
];

/// Split into lowercase-able word tokens, keeping symbols that carry meaning ($, €, °c, c++).
fn tokenize(text: &str) -> Vec<(String, bool)> {
    // (token, capitalised in the source and not the first word of a sentence)
    let mut out = Vec::new();
    let mut sentence_start = true;
    let mut cur = String::new();
    let flush = |cur: &mut String, out: &mut Vec<(String, bool)>, sentence_start: &mut bool| {
        if cur.is_empty() {
            return;
        }
        let word = cur.trim_matches(|c: char| c == '.' || c == '\'' || c == '/' || c == ',');
        if !word.is_empty() {
            let capital =
                word.chars().next().is_some_and(char::is_uppercase) || word.chars().skip(1).any(char::is_uppercase);
            out.push((word.to_string(), capital && !*sentence_start));
            *sentence_start = false;
        }
        if cur.ends_with('.') && !cur.chars().any(|c| c.is_ascii_digit()) {
            *sentence_start = true;
        }
        cur.clear();
    };
    for c in text.chars() {
        match c {
            c if c.is_alphanumeric() || matches!(c, '.' | '\'' | '+' | '#' | '/' | '°' | '’') => {
                cur.push(if c == '’' { '\'' } else { c })
            }
            '$' | '€' | '£' | '¥' | '₹' => {
                flush(&mut cur, &mut out, &mut sentence_start);
                out.push((c.to_string(), false));
                sentence_start = false;
            }
            ',' if cur.chars().last().is_some_and(|d| d.is_ascii_digit()) => cur.push(','),
            '?' | '!' | ':' | ';' => {
                flush(&mut cur, &mut out, &mut sentence_start);
                sentence_start = true;
            }
            '"' if cur.chars().last().is_some_and(|d| d.is_ascii_digit()) => {
                flush(&mut cur, &mut out, &mut sentence_start);
                out.push(("in\"".to_string(), false));
            }
            _ => flush(&mut cur, &mut out, &mut sentence_start),
        }
    }
    flush(&mut cur, &mut out, &mut sentence_start);
    out
}

/// "1,000" -> 1000; "1.50" -> 1.5; "5'10" -> [5, 10]; "3pm" -> 3 (and `pm` as a unit).
fn split_number(token: &str) -> Option<(Vec<f64>, Option<String>)> {
    let t = token.replace(',', "");
    if let Some((l, r)) = t.split_once('x') {
        if let (Ok(l), Ok(r)) = (l.parse::<f64>(), r.parse::<f64>()) {
            return Some((vec![l, r], None));
        }
    }
    let digits_end = t.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '\'')).unwrap_or(t.len());
    if digits_end == 0 {
        return None;
    }
    let (num, rest) = t.split_at(digits_end);
    let nums: Vec<f64> =
        num.split('\'').filter(|s| !s.is_empty()).filter_map(|s| s.trim_end_matches('.').parse::<f64>().ok()).collect();
    if nums.is_empty() {
        return None;
    }
    let suffix = rest.trim_start_matches('-');
    if num.contains('\'') {
        return Some((nums, Some("ft".to_string())));
    }
    let suffix = match suffix {
        "" => None,
        "st" | "nd" | "rd" | "th" | "s" => None,
        other => Some(other.to_string()),
    };
    Some((nums, suffix))
}

fn stem(w: &str) -> String {
    let w = w.trim_end_matches("'s");
    if w.len() > 4 && w.ends_with("ies") {
        format!("{}y", &w[..w.len() - 3])
    } else if w.len() > 3 && w.ends_with('s') && !w.ends_with("ss") && !w.ends_with("us") {
        w[..w.len() - 1].to_string()
    } else {
        w.to_string()
    }
}

/// Unit words that are ordinary words too ("am", "in", "min"): a unit only right after a number.
const UNIT_NEEDS_NUMBER: &[&str] = &[
    "st", "am", "pm", "in\"", "m", "s", "l", "g", "min", "mins", "sec", "secs", "hr", "hrs", "day", "days", "week",
    "weeks", "month", "months", "year", "years", "second", "seconds", "minute", "minutes", "hour", "hours", "ft",
    "foot", "feet", "yd", "oz", "gal",
];

impl GuardConfig {
    fn unit_of(&self, word: &str) -> Option<&str> {
        self.units.iter().find(|(_, names)| names.iter().any(|n| n == word)).map(|(k, _)| k.as_str())
    }

    /// The canonical size a word names, if it is a size word.
    fn size_of(&self, word: &str) -> Option<String> {
        self.sizes.iter().find_map(|entry| {
            let (canon, aliases) = entry.split_once(':').unwrap_or((entry.as_str(), ""));
            (canon == word || aliases.split(',').any(|a| a == word)).then(|| canon.to_string())
        })
    }

    fn canonical_entity(&self, word: &str) -> String {
        let stemmed = stem(word);
        for entry in &self.entity_aliases {
            let (canon, aliases) = entry.split_once(':').unwrap_or((entry.as_str(), ""));
            let named = |w: &str| w == word || w == stemmed || stem(w) == stemmed;
            if named(canon) || aliases.split(',').any(named) {
                return canon.to_string();
            }
        }
        word.to_string()
    }

    /// A word as the substitution and operand rules compare it: units and entity aliases by
    /// their canonical name, everything else by its stem.
    fn concept(&self, word: &str) -> String {
        if let Some((nums, suffix)) = split_number(word) {
            let unit = suffix.as_deref().and_then(|s| self.unit_of(s)).unwrap_or("");
            return format!("{nums:?}{unit}");
        }
        match self.unit_of(word) {
            Some(u) => u.to_string(),
            None => stem(&self.canonical_entity(word)),
        }
    }

    fn facts(&self, text: &str) -> Facts {
        let mut facts = Facts {
            tokens: Vec::new(),
            numbers: BTreeMap::new(),
            units: BTreeSet::new(),
            entities: BTreeSet::new(),
            negated: false,
            sizes: BTreeSet::new(),
            order: Vec::new(),
        };
        let note = |order: &mut Vec<String>, item: String| {
            if !order.contains(&item) {
                order.push(item);
            }
        };
        let tokens = tokenize(text);
        let mut after_number = false;
        for (i, (raw, capital)) in tokens.iter().enumerate() {
            let lower = raw.to_lowercase();
            if let Some((nums, suffix)) = split_number(&lower) {
                for n in nums {
                    *facts.numbers.entry(format!("{n}")).or_default() += 1;
                    note(&mut facts.order, format!("{n}"));
                }
                if let Some(u) = suffix.as_deref().and_then(|s| self.unit_of(s)) {
                    facts.units.insert(u.to_string());
                }
                facts.tokens.push(lower);
                after_number = true;
                continue;
            }
            let word_number = NUMBER_WORDS.iter().find(|(w, _)| *w == lower);
            if let Some((_, n)) = word_number {
                *facts.numbers.entry(format!("{n}")).or_default() += 1;
                note(&mut facts.order, format!("{n}"));
            }
            let next = tokens.get(i + 1).map(|(t, _)| t.to_lowercase()).unwrap_or_default();
            // "British pound(s)" is money, "US dollars" is just dollars.
            let unit = match lower.as_str() {
                "british" | "uk" if next.starts_with("pound") => Some("gbp"),
                "pound" | "pounds" if i > 0 && matches!(tokens[i - 1].0.to_lowercase().as_str(), "british" | "uk") => {
                    Some("gbp")
                }
                "us" | "u.s" if next.starts_with("dollar") => None,
                _ => self.unit_of(&lower),
            };
            if let Some(u) = unit {
                if after_number || !UNIT_NEEDS_NUMBER.contains(&lower.as_str()) {
                    facts.units.insert(u.to_string());
                }
            }
            if self.negations.contains(&lower) || lower.ends_with("n't") {
                facts.negated = true;
            }
            if let Some(size) = self.size_of(&lower) {
                // One-letter sizes ("M", "S") only count when written as capitals.
                if lower.len() > 1 || raw.chars().all(char::is_uppercase) {
                    facts.sizes.insert(size);
                }
            }
            let known = self.known_entities.contains(&lower);
            // "US dollars", "British pound": a capital before a unit qualifies the unit.
            let qualifies_unit = self.unit_of(&next).is_some();
            let pronoun = lower.starts_with("i'");
            let is_entity =
                (*capital && lower.len() > 1 && unit.is_none() && word_number.is_none() && !qualifies_unit && !pronoun)
                    || known;
            if is_entity {
                let e = self.canonical_entity(&lower);
                note(&mut facts.order, e.clone());
                facts.entities.insert(e);
            }
            after_number = word_number.is_some();
            facts.tokens.push(lower);
        }
        facts
    }

    /// `Ok` if `candidate` may answer `query`; otherwise the first rule that refuses it.
    pub fn verify(&self, query: &str, candidate: &str) -> Result<(), Rejection> {
        if !self.enabled {
            return Ok(());
        }
        let (a, b) = (self.facts(query), self.facts(candidate));
        if self.numbers && a.numbers != b.numbers {
            return Err(Rejection::Number);
        }
        if a.units != b.units {
            return Err(Rejection::Unit);
        }
        let colours =
            |f: &Facts| -> BTreeSet<String> { f.tokens.iter().filter(|t| self.colours.contains(t)).cloned().collect() };
        if differs(&colours(&a), &colours(&b)) {
            return Err(Rejection::Colour);
        }
        if differs(&a.sizes, &b.sizes) {
            return Err(Rejection::Size);
        }
        if self.negation && a.negated != b.negated {
            return Err(Rejection::Negation);
        }
        if self.entities {
            // An entity of one text must appear, under any of its names, in the other.
            let letters = |f: &Facts| -> String { f.tokens.concat().chars().filter(|c| c.is_alphanumeric()).collect() };
            let (la, lb) = (letters(&a), letters(&b));
            let present = |e: &String, other: &Facts, other_letters: &str| {
                other.entities.contains(e)
                    || other.tokens.iter().any(|t| self.canonical_entity(t) == *e || stem(t) == stem(e))
                    || (e.len() > 3 && other_letters.contains(e.as_str()))
            };
            if a.entities.iter().any(|e| !present(e, &b, &lb)) || b.entities.iter().any(|e| !present(e, &a, &la)) {
                return Err(Rejection::Entity);
            }
        }
        let content = |f: &Facts| -> BTreeSet<String> {
            f.tokens.iter().filter(|t| !STOPWORDS.contains(&t.as_str())).map(|t| self.concept(t)).collect()
        };
        let (sa, sb) = (content(&a), content(&b));
        // "unlock"/"lock", "disable"/"enable": a negating prefix on a word the other text has.
        let negated_prefix = |x: &String, others: &BTreeSet<String>| {
            ["un", "dis", "de", "non", "in"]
                .iter()
                .any(|p| x.strip_prefix(p).is_some_and(|rest| rest.len() > 2 && others.contains(rest)))
        };
        let (only_a, only_b): (BTreeSet<String>, BTreeSet<String>) =
            (sa.difference(&sb).cloned().collect(), sb.difference(&sa).cloned().collect());
        if only_a.iter().any(|x| negated_prefix(x, &only_b)) || only_b.iter().any(|x| negated_prefix(x, &only_a)) {
            return Err(Rejection::Opposite);
        }
        for (x, y) in &self.opposites {
            let (x, y) = (stem(x), stem(y));
            let a_only = |w: &String| sa.contains(w) && !sb.contains(w);
            let b_only = |w: &String| sb.contains(w) && !sa.contains(w);
            if (a_only(&x) && b_only(&y)) || (a_only(&y) && b_only(&x)) {
                return Err(Rejection::Opposite);
            }
        }
        if self.operand_order && (self.operands_swapped(&a.tokens, &b.tokens) || reordered(&a.order, &b.order)) {
            return Err(Rejection::OperandOrder);
        }
        if self.single_substitution {
            let (only_a, only_b) = (sa.difference(&sb).count(), sb.difference(&sa).count());
            if only_a == 1 && only_b == 1 && sa.intersection(&sb).count() >= 1 {
                return Err(Rejection::Opposite);
            }
        }
        Ok(())
    }

    /// Around the first marker both texts share (`to`, `than`, ...): a word that stands before
    /// it in one text and after it in the other means the operands changed places.
    fn operands_swapped(&self, a: &[String], b: &[String]) -> bool {
        // "in" marks operands only in conversions ("7 kg in pounds"): a unit must follow it.
        let marks = |t: &[String], m: &String| match t.iter().rposition(|w| w == m) {
            Some(at) => m != "in" || t.get(at + 1).is_some_and(|w| self.unit_of(w).is_some()),
            None => false,
        };
        let Some(marker) = self.operand_markers.iter().find(|m| marks(a, m) && marks(b, m)) else { return false };
        let sides = |t: &[String]| -> (BTreeSet<String>, BTreeSet<String>) {
            // The last occurrence: in "how to convert X to Y" the operands surround the second.
            let at = t.iter().rposition(|w| w == marker).unwrap_or(0);
            let operand = |w: &String| -> Option<String> {
                if self.operand_markers.contains(w) || STOPWORDS.contains(&w.as_str()) {
                    return None;
                }
                Some(self.concept(w))
            };
            (t[..at].iter().filter_map(operand).collect(), t[at + 1..].iter().filter_map(operand).collect())
        };
        let ((a_before, a_after), (b_before, b_after)) = (sides(a), sides(b));
        a_before.intersection(&b_after).next().is_some() && a_after.intersection(&b_before).next().is_some()
    }
}

/// Both texts name the same two or more numbers/entities, in another order ("128GB for 256GB").
fn reordered(a: &[String], b: &[String]) -> bool {
    let shared_a: Vec<&String> = a.iter().filter(|x| b.contains(x)).collect();
    let shared_b: Vec<&String> = b.iter().filter(|x| a.contains(x)).collect();
    shared_a.len() >= 2 && shared_a != shared_b
}

/// A substitution (each side has a word the other lacks), or a word on one side only.
fn differs(a: &BTreeSet<String>, b: &BTreeSet<String>) -> bool {
    let (only_a, only_b) = (a.difference(b).next().is_some(), b.difference(a).next().is_some());
    (only_a && only_b) || (a.is_empty() != b.is_empty())
}

const STOPWORDS: &[&str] = &[
    "the", "and", "for", "how", "what", "which", "who", "can", "you", "your", "please", "with", "does", "this", "that",
    "are", "much", "many", "convert", "from", "is", "it", "do", "get", "there", "any", "way", "its", "my", "me",
    "will", "should", "would", "could", "about", "tell", "give", "show", "a", "an", "of", "i", "in", "on", "to", "be",
    "or", "what's", "whats", "i'm", "is", "at", "by", "as", "if", "so", "we", "our", "us", "i've", "it's", "there's",
    "these", "those", "some",
];

#[cfg(test)]
#[path = "tests/guard_tests.rs"]
mod tests;
