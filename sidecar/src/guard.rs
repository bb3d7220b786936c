//! The semantic-hit guard: a candidate whose embedding is close enough is still refused when
//! the two texts differ in a way embeddings do not see. MiniLM scores "USD to EUR" vs "EUR to
//! USD" at 0.98, above most true paraphrases, so a threshold alone cannot make this call.
//!
//! Both texts are first normalised the same way (number words to digits, clock times to
//! 24-hour form, currency and country names and codes to ISO codes, time-zone names to one
//! code), then compared by facts (numbers, units, colours, sizes, negation and exclusion,
//! named entities, tense, quantity) and by structure: a swap of two words or phrases around an
//! identical frame ("exchange X for Y" / "Y for X"), a single content word replaced by a
//! non-synonym, and a pair of words in contrast (WordNet antonyms, including comparatives and
//! superlatives, or two kinds of one thing). Word knowledge comes from `lexicon` (WordNet).

use crate::lexicon::lexicon;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};

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
    Swap,
    Tense,
    Quantity,
    Substitution,
    Contrast,
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
            Rejection::Swap => "swap",
            Rejection::Tense => "tense",
            Rejection::Quantity => "quantity",
            Rejection::Substitution => "substitution",
            Rejection::Contrast => "contrast",
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
    /// The structural checks: tense, quantity, exclusion, WordNet antonyms, swapped phrases
    /// and words in contrast (see the module doc).
    pub structure: bool,
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
            ("mps", "mps"),
            ("cuin", "cuin"),
            ("cuft", "cuft"),
            ("sqft", "sqft"),
            ("sqm", "sqm"),
            ("floz", "floz"),
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
            // The two ends of an order in time: the earliest of a series against the most recent.
            ("earliest", "latest"),
            ("earliest", "recent"),
            ("earliest", "newest"),
            ("oldest", "recent"),
            ("oldest", "latest"),
            ("first", "latest"),
            ("first", "final"),
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
                 hasn't hadn't excluding except non dont doesnt didnt isnt arent wasnt werent cant \
                 couldnt shouldnt wouldnt havent hasnt",
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
            structure: true,
        }
    }
}

/// A text as `GuardConfig::prepare` leaves it.
pub struct Prepared {
    text: String,
    facts: Facts,
    /// Acronyms are resolved against the other text, so a pair is compared from scratch when
    /// one text could spell out an acronym of the other. The text's acronyms, lower case
    /// ("nyc"), and the first letters of its words other than "and" ("nycbc" for "New York City
    /// by car"): an acronym of one text can only be spelled out by the other
    /// (`expand_acronyms`) if it is a run of the other's initials.
    acronyms: Vec<String>,
    initials: String,
    /// A hash of what `compare` checks first and refuses on any difference: the numbers (when
    /// the number check is on) and the units. Two texts with different keys are refused for
    /// sure (`GuardConfig::surely_refused`), without the rest of the rules.
    fact_key: u64,
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
    /// Each token as the rules compare it (`concept`), the set of the content ones, and the
    /// lemmas the swap and frame checks read: computed once per text.
    concepts: Vec<String>,
    content: BTreeSet<String>,
    lemmas: Vec<String>,
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
        // "12500." ends a sentence too; a decimal ("1.5") never ends with its point.
        if cur.ends_with('.') {
            *sentence_start = true;
        }
        cur.clear();
    };
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        // "15:30" is one token (a clock time), not a sentence break.
        let between_digits = cur.chars().last().is_some_and(|d| d.is_ascii_digit())
            && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit());
        match c {
            ':' if between_digits => cur.push(':'),
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

/// Time-zone names and abbreviations -> one code per zone (daylight and standard time are one
/// zone to a person asking). The common English names of the zones people name in requests.
const TIME_ZONES: &[(&str, &str)] = &[
    ("eastern time", "tz-et"),
    ("eastern standard time", "tz-et"),
    ("eastern daylight time", "tz-et"),
    ("eastern", "tz-et"),
    ("est", "tz-et"),
    ("edt", "tz-et"),
    ("et", "tz-et"),
    ("central time", "tz-ct"),
    ("central standard time", "tz-ct"),
    ("central daylight time", "tz-ct"),
    ("cst", "tz-ct"),
    ("cdt", "tz-ct"),
    ("ct", "tz-ct"),
    ("mountain time", "tz-mt"),
    ("mountain standard time", "tz-mt"),
    ("mst", "tz-mt"),
    ("mdt", "tz-mt"),
    ("pacific time", "tz-pt"),
    ("pacific standard time", "tz-pt"),
    ("pacific daylight time", "tz-pt"),
    ("pacific", "tz-pt"),
    ("pst", "tz-pt"),
    ("pdt", "tz-pt"),
    ("pt", "tz-pt"),
    ("greenwich mean time", "tz-utc"),
    ("coordinated universal time", "tz-utc"),
    ("gmt", "tz-utc"),
    ("utc", "tz-utc"),
    ("british summer time", "tz-uk"),
    ("bst", "tz-uk"),
    ("uk time", "tz-uk"),
    ("central european time", "tz-cet"),
    ("cet", "tz-cet"),
    ("cest", "tz-cet"),
    ("india standard time", "tz-ist"),
    ("ist", "tz-ist"),
    ("japan standard time", "tz-jst"),
    ("jst", "tz-jst"),
    ("australian eastern time", "tz-aet"),
    ("aest", "tz-aet"),
    ("aedt", "tz-aet"),
];

/// Country names people write that ISO 3166 does not spell this way.
const COUNTRY_ALIASES: &[(&str, &str)] = &[
    ("uk", "gb"),
    ("u.k", "gb"),
    ("britain", "gb"),
    ("great britain", "gb"),
    ("usa", "us"),
    ("u.s.a", "us"),
    ("u.s", "us"),
    ("america", "us"),
    ("united states of america", "us"),
    ("uae", "ae"),
    ("south korea", "kr"),
    ("north korea", "kp"),
    ("russia", "ru"),
];

/// Currency names outside ISO 4217's official spelling, and its codes in lowercase.
const CURRENCY_ALIASES: &[(&str, &str)] = &[
    ("us dollar", "usd"),
    ("us dollars", "usd"),
    ("american dollar", "usd"),
    ("american dollars", "usd"),
    ("japanese yen", "jpy"),
    ("british pound", "gbp"),
    ("british pounds", "gbp"),
    ("pound sterling", "gbp"),
    ("pounds sterling", "gbp"),
    ("canadian dollar", "cad"),
    ("canadian dollars", "cad"),
    ("australian dollar", "aud"),
    ("australian dollars", "aud"),
    ("swiss franc", "chf"),
    ("swiss francs", "chf"),
    ("indian rupee", "inr"),
    ("indian rupees", "inr"),
    ("chinese yuan", "cny"),
    ("yuan", "cny"),
    ("renminbi", "cny"),
    ("rmb", "cny"),
    ("mexican peso", "mxn"),
    ("mexican pesos", "mxn"),
    ("korean won", "krw"),
    ("south korean won", "krw"),
    ("brazilian real", "brl"),
    ("brazilian reais", "brl"),
    ("bitcoin", "btc"),
    ("btc", "btc"),
];

/// Compound units and garment sizes, written out or abbreviated, longest first.
const UNIT_PHRASES: &[(&str, &str)] = &[
    ("kilometres per hour", "kmh"),
    ("kilometers per hour", "kmh"),
    ("km per hour", "kmh"),
    ("miles per hour", "mph"),
    ("metres per second", "mps"),
    ("meters per second", "mps"),
    ("m/s", "mps"),
    ("cubic inches", "cuin"),
    ("cubic inch", "cuin"),
    ("cu in", "cuin"),
    ("cubic feet", "cuft"),
    ("cubic foot", "cuft"),
    ("cu ft", "cuft"),
    ("square feet", "sqft"),
    ("square foot", "sqft"),
    ("sq ft", "sqft"),
    ("square metres", "sqm"),
    ("square meters", "sqm"),
    ("sq m", "sqm"),
    ("m²", "sqm"),
    ("fluid ounces", "floz"),
    ("fluid ounce", "floz"),
    ("fl oz", "floz"),
    ("double extra large", "xxl"),
    ("extra large", "xl"),
    ("extra small", "xs"),
    ("2xl", "xxl"),
];

const SMALL_NUMBERS: &[(&str, u64)] = &[
    ("zero", 0),
    ("one", 1),
    ("two", 2),
    ("three", 3),
    ("four", 4),
    ("five", 5),
    ("six", 6),
    ("seven", 7),
    ("eight", 8),
    ("nine", 9),
    ("ten", 10),
    ("eleven", 11),
    ("twelve", 12),
    ("thirteen", 13),
    ("fourteen", 14),
    ("fifteen", 15),
    ("sixteen", 16),
    ("seventeen", 17),
    ("eighteen", 18),
    ("nineteen", 19),
    ("twenty", 20),
    ("thirty", 30),
    ("forty", 40),
    ("fifty", 50),
    ("sixty", 60),
    ("seventy", 70),
    ("eighty", 80),
    ("ninety", 90),
];
const SCALES: &[(&str, u64)] =
    &[("hundred", 100), ("thousand", 1000), ("million", 1_000_000), ("billion", 1_000_000_000)];
const ORDINALS: &[&str] = &[
    "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth", "eleventh",
    "twelfth",
];

/// "15:30" -> (15, 30).
fn clock(token: &str) -> Option<(u32, u32)> {
    let (h, m) = token.split_once(':')?;
    let (h, m) = (h.parse::<u32>().ok()?, m.parse::<u32>().ok()?);
    (h < 24 && m < 60).then_some((h, m))
}

fn clock_token(h: u32, m: u32, pm: Option<bool>) -> String {
    let h = match pm {
        Some(true) if h < 12 => h + 12,
        Some(false) if h == 12 => 0,
        _ => h,
    };
    format!("{h}:{m:02}")
}

/// An acronym in one text that the other spells out ("NYC" / "New York City", "DOB" / "date
/// of birth", "CI/CD" / "continuous integration and continuous deployment") is replaced by the
/// words it stands for, so both texts name the thing the same way.
fn expand_acronyms(a: &str, b: &str) -> (String, String) {
    fn words(t: &str) -> Vec<String> {
        t.split(|c: char| !(c.is_alphanumeric() || c == '/' || c == '\''))
            .filter(|w| !w.is_empty())
            .map(str::to_string)
            .collect()
    }
    fn expand(text: &str, other: &str) -> String {
        let other_words = words(other);
        let lower: Vec<String> = other_words.iter().map(|w| w.to_lowercase()).collect();
        let mut out = text.to_string();
        for word in words(text) {
            let letters: String = word.chars().filter(|c| *c != '/').collect();
            let acronym = (2..=5).contains(&letters.chars().count())
                && letters.chars().all(|c| c.is_ascii_uppercase())
                && !other_words.iter().any(|w| *w == word);
            if !acronym {
                continue;
            }
            // Parts split by '/' ("CI/CD") are spelled out one after another, joined by "and".
            let initials: Vec<char> = letters.to_lowercase().chars().collect();
            let skippable = |w: &str| matches!(w, "and" | "&");
            for start in 0..lower.len() {
                let (mut k, mut j, mut used) = (0, start, Vec::new());
                while k < initials.len() && j < lower.len() {
                    if lower[j].starts_with(initials[k]) {
                        used.push(other_words[j].clone());
                        k += 1;
                    } else if skippable(&lower[j]) && k > 0 {
                        used.push(other_words[j].clone());
                    } else {
                        break;
                    }
                    j += 1;
                }
                if k == initials.len() && used.len() >= 2 {
                    out = out.replacen(&word, &used.join(" "), 1);
                    break;
                }
            }
        }
        out
    }
    (expand(a, b), expand(b, a))
}

/// Whether `expand_acronyms` could change either text of the pair: an acronym of one is a run
/// of the other's initials ("and" skipped). When it is not, the prepared facts are the facts.
fn spells_out(a: &Prepared, b: &Prepared) -> bool {
    let runs = |x: &Prepared, y: &Prepared| x.acronyms.iter().any(|ac| y.initials.contains(ac.as_str()));
    runs(a, b) || runs(b, a)
}

/// A text written in capitals ("HOW DO I UPDATE MY ADRESS??") has no names by case.
fn unshout(mut tokens: Vec<(String, bool)>) -> Vec<(String, bool)> {
    let letters = tokens.iter().flat_map(|(t, _)| t.chars()).filter(|c| c.is_alphabetic());
    let (upper, all) = letters.fold((0, 0), |(u, a), c| (u + usize::from(c.is_uppercase()), a + 1));
    if all >= 8 && upper * 10 >= all * 7 {
        tokens.iter_mut().for_each(|t| t.1 = false);
    }
    tokens
}

/// The same request written two ways reads the same after this: number words become digits
/// ("twenty five" -> "25", "third" -> "3rd"), clock times 24-hour ("3 pm", "3pm", "15:00",
/// "noon"), currency, country and time-zone names one code each. Returns (token, capital).
fn normalize(
    tokens: Vec<(String, bool)>,
    joinable: impl Fn(&str) -> bool,
    is_unit: impl Fn(&str) -> bool,
) -> Vec<(String, bool)> {
    let lx = lexicon();
    let lower: Vec<String> = tokens.iter().map(|(t, _)| t.to_lowercase()).collect();
    let mut out: Vec<(String, bool)> = Vec::with_capacity(tokens.len());
    let mut i = 0;
    let is_number = |t: &str| t.chars().next().is_some_and(|c| c.is_ascii_digit());
    while i < tokens.len() {
        let w = lower[i].as_str();
        // Compound units and sizes written out or abbreviated: one token each.
        if let Some((len, token)) = UNIT_PHRASES.iter().find_map(|(phrase, token)| {
            let words: Vec<&str> = phrase.split(' ').collect();
            (lower.len() >= i + words.len() && lower[i..i + words.len()].iter().zip(&words).all(|(x, y)| x == y))
                .then_some((words.len(), *token))
        }) {
            out.push((token.to_string(), false));
            i += len;
            continue;
        }
        // Longest multi-word name first: "pound sterling", "eastern standard time", "united kingdom".
        let mut merged = None;
        for len in (1..=4usize).rev() {
            if i + len > tokens.len() {
                continue;
            }
            let phrase = lower[i..i + len].join(" ");
            let after_number = i > 0 && out.last().is_some_and(|(t, _)| is_number(t));
            if let Some((_, tz)) = TIME_ZONES.iter().find(|(n, _)| *n == phrase) {
                // Two-letter abbreviations ("et", "pt", "ct") only when written in capitals.
                if len > 1 || phrase.len() > 2 || tokens[i].0.chars().all(|c| c.is_uppercase()) {
                    merged = Some((len, tz.to_string(), false));
                    break;
                }
            }
            if let Some((_, c)) = CURRENCY_ALIASES.iter().find(|(n, _)| *n == phrase) {
                merged = Some((len, format!("cur-{c}"), false));
                break;
            }
            // "New Zealand dollars", "Norwegian kroner": ISO 4217 names are singular.
            let singular = phrase
                .strip_suffix("ner")
                .map(|p| format!("{p}ne"))
                .or_else(|| phrase.strip_suffix('s').map(str::to_string))
                .filter(|_| len > 1);
            if let Some(code) = singular.as_ref().and_then(|p| lx.currencies.get(p)) {
                merged = Some((len, format!("cur-{code}"), false));
                break;
            }
            // "Thai baht", "Hungarian forint": a nationality before a one-word currency name.
            if len == 2 && tokens[i].1 {
                let last = &lower[i + 1];
                if let Some(code) = lx.currencies.get(last) {
                    merged = Some((2, format!("cur-{code}"), false));
                    break;
                }
            }
            if let Some(code) = lx.currencies.get(&phrase) {
                // A one-word currency name that is also an English word ("won", "real") only
                // counts after a number.
                if len > 1 || !lx.knows(&phrase) || after_number {
                    merged = Some((len, format!("cur-{code}"), false));
                    break;
                }
            }
            let country = COUNTRY_ALIASES.iter().find(|(n, _)| *n == phrase).map(|(_, c)| c.to_string());
            if let Some(code) =
                country.or_else(|| (len > 1 || phrase.len() > 3).then(|| lx.countries.get(&phrase).cloned()).flatten())
            {
                merged = Some((len, format!("country-{code}"), true));
                break;
            }
            // "US" in capitals is the country, "us" is a pronoun.
            if len == 1 && tokens[i].0 == "US" {
                merged = Some((1, "country-us".to_string(), true));
                break;
            }
            // ISO 4217 codes in capitals ("JPY", "TRY"): lowercase "try" or "all" are words.
            if len == 1 && w.len() == 3 && tokens[i].0.chars().all(|c| c.is_ascii_uppercase()) {
                if lx.is_currency_code(w) {
                    merged = Some((1, format!("cur-{w}"), false));
                    break;
                }
            }
        }
        if let Some((len, token, capital)) = merged {
            out.push((token, capital));
            i += len;
            continue;
        }
        // A two-word name WordNet knows is one word: "polka dot", "leave out", "log in".
        if let Some(next) = lower.get(i + 1) {
            // "leaves out" joins as "leave_out".
            let bases = if lx.knows(w) { Vec::new() } else { lx.verb_bases(w) };
            let joined = std::iter::once(w.to_string())
                .chain(bases)
                .map(|base| format!("{base}_{next}"))
                .find(|j| lx.knows(j))
                .unwrap_or_else(|| format!("{w}_{next}"));
            let wordy = |t: &str| t.chars().all(|c| c.is_ascii_alphabetic());
            // Time words stay apart: "last quarter" is a tense, not the moon's phase.
            let deictic =
                |t: &str| matches!(t, "last" | "next" | "past" | "previous" | "coming" | "following" | "this");
            if wordy(w)
                && wordy(next)
                && !deictic(w)
                && !STOPWORDS.contains(&w)
                && joinable(w)
                && joinable(next)
                && lx.knows(&joined)
            {
                out.push((joined, tokens[i].1 || tokens[i + 1].1));
                i += 2;
                continue;
            }
        }
        // Number words: "two hundred and fifty", "a dozen", "a hundred".
        let small = |t: &str| SMALL_NUMBERS.iter().find(|(n, _)| *n == t).map(|(_, v)| *v);
        let scale = |t: &str| SCALES.iter().find(|(n, _)| *n == t).map(|(_, v)| *v);
        // "one" is a number before another number word or a unit ("one year old"), else a pronoun.
        let starts_number = small(w).is_some_and(|_| {
            w != "one" || lower.get(i + 1).is_some_and(|n| scale(n).is_some() || small(n).is_some() || is_unit(n))
        }) || scale(w).is_some()
            || (w == "a" && lower.get(i + 1).is_some_and(|n| scale(n).is_some() || n == "dozen"))
            || w == "dozen";
        if starts_number {
            let (mut total, mut current, mut j) = (0u64, 0u64, i);
            while j < lower.len() {
                let t = lower[j].as_str();
                if let Some(v) = small(t) {
                    current += v;
                } else if let Some(v) = scale(t) {
                    if v == 100 {
                        current = current.max(1) * 100;
                    } else {
                        total += current.max(1) * v;
                        current = 0;
                    }
                } else if t == "dozen" {
                    current = current.max(1) * 12;
                } else if (t == "a" && j == i)
                    || (t == "and" && j > i && lower.get(j + 1).is_some_and(|n| small(n).is_some()))
                {
                } else {
                    break;
                }
                j += 1;
            }
            // "two and a half" -> 2.5
            let half = lower.get(j..j + 3).is_some_and(|w| w == ["and", "a", "half"]);
            let value = (total + current) as f64 + if half { 0.5 } else { 0.0 };
            out.push((format!("{value}"), false));
            i = j + if half { 3 } else { 0 };
            continue;
        }
        if let Some(n) = ORDINALS.iter().position(|o| *o == w) {
            out.push((format!("{}th", n + 1), false));
            i += 1;
            continue;
        }
        match w {
            "noon" | "midday" => out.push(("12:00".into(), false)),
            "midnight" => out.push(("0:00".into(), false)),
            _ => {
                // "3 pm", "3pm", "3:30 p.m.", "15:00": one 24-hour clock token.
                let next = lower.get(i + 1).map(String::as_str);
                let meridiem = |t: Option<&str>| match t {
                    Some("pm" | "p.m" | "p.m.") => Some(true),
                    Some("am" | "a.m" | "a.m.") => Some(false),
                    _ => None,
                };
                let (digits, suffix) = match w.find(|c: char| !(c.is_ascii_digit() || c == ':')) {
                    Some(at) => (&w[..at], Some(&w[at..])),
                    None => (w, None),
                };
                let hm = clock(digits).or_else(|| digits.parse::<u32>().ok().filter(|h| *h <= 12).map(|h| (h, 0)));
                match (hm, meridiem(suffix), meridiem(next)) {
                    (Some((h, m)), Some(pm), _) => out.push((clock_token(h, m, Some(pm)), false)),
                    (Some((h, m)), None, Some(pm)) if suffix.is_none() => {
                        out.push((clock_token(h, m, Some(pm)), false));
                        i += 1;
                    }
                    _ if clock(w).is_some() => {
                        let (h, m) = clock(w).unwrap_or((0, 0));
                        out.push((clock_token(h, m, None), false));
                    }
                    _ => out.push(tokens[i].clone()),
                }
            }
        }
        i += 1;
    }
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
        let named =
            |w: &str| self.units.iter().find(|(_, names)| names.iter().any(|n| n == w)).map(|(k, _)| k.as_str());
        // "cals", "kgs": a plural of an abbreviation.
        named(word).or_else(|| word.strip_suffix('s').filter(|w| w.len() >= 2).and_then(named))
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
            // Only a word that could be a plural of `w` is stemmed (stemming allocates).
            let named = |w: &str| {
                w == word || w == stemmed || (word.len() > w.len() && word.starts_with(w) && stem(w) == stemmed)
            };
            if named(canon) || aliases.split(',').any(named) {
                return canon.to_string();
            }
        }
        word.to_string()
    }

    /// A word as the substitution and operand rules compare it: units and entity aliases by
    /// their canonical name, everything else by its stem.
    fn concept(&self, word: &str) -> String {
        // Words of length and speed that WordNet keeps in separate synsets.
        match word {
            "brief" | "briefly" | "short" | "shortly" => return "short".to_string(),
            "quick" | "quickly" | "fast" | "rapid" | "rapidly" => return "fast".to_string(),
            _ => {}
        }
        if clock(word).is_some() {
            return format!("t{word}");
        }
        if let Some(code) = word.strip_prefix("cur-") {
            return code.to_string();
        }
        if let Some((nums, suffix)) = split_number(word) {
            let unit = suffix.as_deref().and_then(|s| self.unit_of(s)).unwrap_or("");
            return format!("{nums:?}{unit}");
        }
        match self.unit_of(word) {
            Some(u) => u.to_string(),
            None => {
                let word = self.canonical_entity(word);
                let lx = lexicon();
                let lemma = lx.lemma(&word);
                if lemma == word && !lx.knows(&word) {
                    stem(&word)
                } else {
                    lemma
                }
            }
        }
    }

    /// Colour and size words keep their own checks, so they never join a two-word name.
    fn joinable(&self, w: &str) -> bool {
        !self.colours.iter().any(|c| c == w)
            && self.size_of(w).is_none()
            && !self.known_entities.iter().any(|e| e == w)
            && self.canonical_entity(w) == w
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
            concepts: Vec::new(),
            content: BTreeSet::new(),
            lemmas: Vec::new(),
        };
        let note = |order: &mut Vec<String>, item: String| {
            if !order.contains(&item) {
                order.push(item);
            }
        };
        let tokens = normalize(unshout(tokenize(text)), |w| self.joinable(w), |w| self.unit_of(w).is_some());
        let mut after_number = false;
        for (i, (raw, capital)) in tokens.iter().enumerate() {
            let lower = raw.to_lowercase();
            if clock(&lower).is_some() {
                *facts.numbers.entry(format!("t{lower}")).or_default() += 1;
                note(&mut facts.order, format!("t{lower}"));
                facts.tokens.push(lower);
                after_number = true;
                continue;
            }
            if let Some(unit) = lower.strip_prefix("cur-").or(lower.starts_with("tz-").then_some(lower.as_str())) {
                facts.units.insert(unit.to_string());
                facts.tokens.push(lower);
                after_number = false;
                continue;
            }
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
            // "I'm", and greetings or thanks written with a capital, name nothing.
            let pronoun = lower.starts_with("i'") || FILLERS.contains(&lower.as_str());
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
        facts.concepts = facts.tokens.iter().map(|t| self.concept(t)).collect();
        facts.content = facts
            .tokens
            .iter()
            .zip(&facts.concepts)
            .filter(|(t, _)| !STOPWORDS.contains(&t.as_str()))
            .map(|(_, c)| c.clone())
            .collect();
        facts.lemmas = lemmas(&facts.tokens);
        facts
    }

    /// The normalised tokens and content concepts of a text, as the rules see them (for
    /// looking at a refusal: `semgate-eval --explain`).
    pub fn explain(&self, text: &str) -> String {
        let f = self.facts(text);
        let content: Vec<String> =
            f.tokens.iter().filter(|t| !STOPWORDS.contains(&t.as_str())).map(|t| self.concept(t)).collect();
        format!(
            "tokens {:?} numbers {:?} units {:?} entities {:?} content {:?}",
            f.tokens, f.numbers, f.units, f.entities, content
        )
    }

    /// The content words each text has that the other does not cover, and the number of
    /// content words they share (for looking at the guard's decisions).
    pub fn loose_words(&self, a: &str, b: &str) -> (Vec<String>, Vec<String>, usize) {
        let (a, b) = expand_acronyms(a, b);
        let (a, b) = (self.facts(&a), self.facts(&b));
        let only_a = a.content.difference(&b.content).cloned().collect();
        let only_b = b.content.difference(&a.content).cloned().collect();
        let (la, lb) = loose(&only_a, &only_b, &a.content, &b.content);
        (la, lb, a.content.intersection(&b.content).count())
    }

    /// Neither text says anything the other does not cover: every content word of each is in
    /// the other, or a synonym, form, abbreviation or misspelling of one of its words, after
    /// both are normalised ("Convert 50 euros to yen" / "Convert 50 EUR to JPY"). With
    /// `verify`'s consent, the same request in other words.
    pub fn same_request(&self, a: &str, b: &str) -> bool {
        let (la, lb, shared) = self.loose_words(a, b);
        la.is_empty() && lb.is_empty() && shared > 0
    }

    /// Time to break one text into facts (for the probe's cost breakdown).
    pub fn facts_cost(&self, text: &str) -> usize {
        self.facts(text).tokens.len()
    }

    /// `Ok` if `candidate` may answer `query`; otherwise the first rule that refuses it.
    pub fn verify(&self, query: &str, candidate: &str) -> Result<(), Rejection> {
        if !self.enabled {
            return Ok(());
        }
        let (query, candidate) = expand_acronyms(query, candidate);
        self.compare(&self.facts(&query), &self.facts(&candidate))
    }

    /// A text broken into facts once, to be compared with many others (the stored side of a
    /// lookup's candidates).
    pub fn prepare(&self, text: &str) -> Prepared {
        let words: Vec<&str> =
            text.split(|c: char| !(c.is_alphanumeric() || c == '/' || c == '\'')).filter(|w| !w.is_empty()).collect();
        let acronyms = words
            .iter()
            .map(|w| w.chars().filter(|c| *c != '/').collect::<String>())
            .filter(|l| (2..=5).contains(&l.chars().count()) && l.chars().all(|c| c.is_ascii_uppercase()))
            .map(|l| l.to_lowercase())
            .collect();
        let initials =
            words.iter().map(|w| w.to_lowercase()).filter(|w| w != "and").filter_map(|w| w.chars().next()).collect();
        let facts = self.facts(text);
        let mut h = std::collections::hash_map::DefaultHasher::new();
        if self.numbers {
            facts.numbers.hash(&mut h);
        }
        facts.units.hash(&mut h);
        Prepared { text: text.to_string(), fact_key: h.finish(), facts, acronyms, initials }
    }

    /// True only when `verify_prepared(query, candidate)` refuses for sure, decided from the
    /// prepared texts' keys alone (a different number or unit): the first stage skips such
    /// candidates at the cost of one comparison. False says nothing.
    pub fn surely_refused(&self, query: &Prepared, candidate: &Prepared) -> bool {
        self.enabled && query.fact_key != candidate.fact_key && !spells_out(query, candidate)
    }

    /// `verify` on prepared texts: the same verdict, without breaking either text up again.
    pub fn verify_prepared(&self, query: &Prepared, candidate: &Prepared) -> Result<(), Rejection> {
        if !self.enabled {
            return Ok(());
        }
        if spells_out(query, candidate) {
            return self.verify(&query.text, &candidate.text);
        }
        self.compare(&query.facts, &candidate.facts)
    }

    fn compare(&self, a: &Facts, b: &Facts) -> Result<(), Rejection> {
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
                    || other.tokens.iter().any(|t| initialism(e, t))
            };
            if a.entities.iter().any(|e| !present(e, &b, &lb)) || b.entities.iter().any(|e| !present(e, &a, &la)) {
                return Err(Rejection::Entity);
            }
        }
        let (sa, sb) = (&a.content, &b.content);
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
            let (x, y) = (self.concept(x), self.concept(y));
            let a_only = |w: &String| sa.contains(w) && !sb.contains(w);
            let b_only = |w: &String| sb.contains(w) && !sa.contains(w);
            if (a_only(&x) && b_only(&y)) || (a_only(&y) && b_only(&x)) {
                return Err(Rejection::Opposite);
            }
        }
        if self.operand_order
            && (self.operands_swapped(&a.tokens, &b.tokens) || reordered(&self.order_items(&a), &self.order_items(&b)))
        {
            return Err(Rejection::OperandOrder);
        }
        if !self.structure {
            if self.single_substitution && only_a.len() == 1 && only_b.len() == 1 && sa.intersection(&sb).count() >= 1 {
                return Err(Rejection::Substitution);
            }
            return Ok(());
        }
        // "When does it renew?" / "When did it renew?": the question's auxiliary alone changed.
        let aux = |f: &Facts, words: &[&str]| f.tokens.iter().any(|t| words.contains(&t.as_str()));
        let (past, present) = (["did", "didn't"], ["do", "does", "don't", "doesn't"]);
        if (aux(a, &past) && !aux(a, &present) && aux(b, &present) && !aux(b, &past))
            || (aux(b, &past) && !aux(b, &present) && aux(a, &present) && !aux(a, &past))
        {
            return Err(Rejection::Tense);
        }
        let (ta, tb) = (tense(&a.tokens), tense(&b.tokens));
        if ta.iter().zip(&tb).any(|(x, y)| x.is_some() && y.is_some() && x != y) {
            return Err(Rejection::Tense);
        }
        if quantity_differs(&a.tokens, &b.tokens)
            || quantity_differs(&b.tokens, &a.tokens)
            || partitive_differs(&a.tokens, &b.tokens)
            || partitive_differs(&b.tokens, &a.tokens)
            || number_differs(&a.tokens, &b.tokens)
        {
            return Err(Rejection::Quantity);
        }
        let lx = lexicon();
        // "All folders but node_modules", "everything but the price": "but" after a universal
        // word excludes too.
        let all_but = |t: &[String], i: usize| {
            t[i] == "but"
                && t[i.saturating_sub(3)..i]
                    .iter()
                    .any(|w| matches!(w.as_str(), "all" | "every" | "everything" | "anything"))
        };
        let excludes = |f: &Facts| {
            f.tokens.iter().any(|t| EXCLUSION.contains(&lx.lemma(t).as_str()))
                || (0..f.tokens.len()).any(|i| all_but(&f.tokens, i))
        };
        if excludes(&a) != excludes(&b) {
            return Err(Rejection::Negation);
        }
        // Antonyms on one side each ("cheapest"/"most expensive", "oldest"/"most recent").
        // A compound ("price_increase") opposes through its parts too.
        let forms = |w: &String| -> Vec<String> {
            std::iter::once(w.as_str())
                .chain(w.split('_').filter(|_| w.contains('_')))
                .flat_map(|p| lx.base_forms(p))
                .collect()
        };
        let opposed = |x: &String, y: &String| {
            let (fx, fy) = (forms(x), forms(y));
            fx.iter().any(|x| fy.iter().any(|y| lx.antonyms(x, y)))
        };
        if only_a.iter().any(|x| only_b.iter().any(|y| opposed(x, y))) {
            return Err(Rejection::Opposite);
        }
        let (la, lb) = (&a.lemmas, &b.lemmas);
        if swapped_spans(&la, &lb)
            || crossed_words(&a.tokens, &b.tokens)
            || counted_swapped(&la, &lb)
            || transposed(&a.tokens, &b.tokens)
        {
            return Err(Rejection::Swap);
        }
        if one_word_changed(&la, &lb, |x, y| self.concept(x) == self.concept(y)) {
            return Err(Rejection::Substitution);
        }
        let (loose_a, loose_b) = loose(&only_a, &only_b, sa, sb);
        let (loose_a, loose_b): (Vec<&String>, Vec<&String>) = (loose_a.iter().collect(), loose_b.iter().collect());
        if debug() {
            eprintln!(
                "guard: loose {loose_a:?} / {loose_b:?}, shared {}, content {} / {}",
                sa.intersection(sb).count(),
                sa.len(),
                sb.len()
            );
        }
        // One content word each side, the rest equal (or covered): a different question unless
        // they are synonyms. Among rewordings, only a thing (a noun that is no verb) counts.
        let thing = |w: &str| lx.mostly_noun(w);
        if self.single_substitution
            && ((only_a.len() == 1 && only_b.len() == 1)
                || (loose_a.len() == 1 && loose_b.len() == 1 && thing(loose_a[0]) && thing(loose_b[0])))
            && loose_a.len() == 1
            && loose_b.len() == 1
            && sa.intersection(&sb).count() >= 1
        {
            return Err(Rejection::Substitution);
        }
        // A short phrase of things and qualities replaced by another ("brushed nickel" /
        // "polished chrome") with the rest of the request shared.
        let quality = |w: &&String| lx.mostly_noun(w) || lx.mostly_adj(w) || !lx.knows(w);
        // Two loose words are one phrase when they stand side by side.
        let phrase = |loose: &[&String], f: &Facts| {
            let concepts = &f.concepts;
            loose.len() == 1 || concepts.windows(2).any(|w| loose.iter().all(|l| w.contains(l)))
        };
        if (1..=2).contains(&loose_a.len())
            && (1..=2).contains(&loose_b.len())
            && loose_a.iter().chain(&loose_b).all(quality)
            && phrase(&loose_a, &a)
            && phrase(&loose_b, &b)
            && sa.intersection(&sb).count() >= 2
        {
            return Err(Rejection::Substitution);
        }
        // The same frame around a different slot: the texts begin and end alike, and what
        // differs between holds words neither side covers ("... as a numbered list" / "... as a
        // script for a cooking video", "for a complete beginner" / "for a senior engineer").
        if !loose_a.is_empty() && !loose_b.is_empty() && same_frame(&la, &lb) {
            return Err(Rejection::Substitution);
        }
        // A long rewording leaves many words uncovered on both sides; two kinds of one thing
        // only tell a different request apart from a rewording when nothing else differs.
        if loose_a.len() != 1 || loose_b.len() != 1 {
            return Ok(());
        }
        for x in &loose_a {
            for y in &loose_b {
                if lx.in_contrast(x, y) {
                    if debug() {
                        eprintln!("contrast {x} / {y}");
                    }
                    return Err(Rejection::Contrast);
                }
                // Two names unknown to the lexicon ("numpy"/"polars"), too far apart to be typos.
                let name = |w: &str| w.len() >= 3 && w.chars().all(|c| c.is_ascii_alphabetic()) && !lx.knows(w);
                if name(x) && name(y) && edit_distance(x, y) > 2 {
                    return Err(Rejection::Entity);
                }
            }
        }
        Ok(())
    }

    /// What the order check compares: numbers always (a range "10 to 50" reversed), named
    /// entities only without the structural checks (which find swapped names by their frame).
    fn order_items(&self, f: &Facts) -> Vec<String> {
        let numeric = |x: &String| x.starts_with(|c: char| c.is_ascii_digit()) || x.starts_with('t');
        f.order.iter().filter(|x| !self.structure || numeric(x)).cloned().collect()
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

/// `SEMGATE_GUARD_DEBUG` set: the guard prints what it compares (for `semgate-eval --explain`).
fn debug() -> bool {
    static DEBUG: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *DEBUG.get_or_init(|| std::env::var_os("SEMGATE_GUARD_DEBUG").is_some())
}

/// Verbs and prepositions that leave something out: "leave out X" asks the opposite of
/// "focus on X" with no "not" in sight. The lemmas of WordNet's first senses of these verbs.
const EXCLUSION: &[&str] = &[
    "exclude",
    "omit",
    "leave_out",
    "skip",
    "avoid",
    "ignore",
    "without",
    "except",
    "excluding",
    "minus",
    "drop",
    "omitting",
    "sans",
];

/// Words that carry no request of their own (greetings, politeness, hedges).
const FILLERS: &[&str] = &[
    "sorry",
    "sry",
    "noob",
    "u",
    "ur",
    "um",
    "uh",
    "hmm",
    "btw",
    "please",
    "thanks",
    "thank",
    "hi",
    "hello",
    "hey",
    "quick",
    "question",
    "help",
    "just",
    "really",
    "actually",
    "possible",
    "want",
    "need",
    "like",
    "know",
    "wonder",
    "kindly",
    "anyone",
    "someone",
    "somebody",
    "pls",
    "plz",
    "thx",
    "okay",
    "ok",
    "way",
    "best",
    "good",
    "able",
    "let",
    "find",
    "out",
    "explain",
    "describe",
    "write",
    "tell",
    "show",
    "say",
    "give",
    "make",
    "go",
    "ask",
    "idea",
    "here",
    "also",
    "there",
    "something",
    "anything",
    "thing",
    "kind",
    "sort",
    "sure",
    "exactly",
    "currently",
    "now",
    "right",
    "correct",
    "proper",
    "properly",
    "basically",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tense {
    Past,
    Future,
}

/// The time a request is about, twice: by its auxiliaries ("was"/"will") and by its time words
/// ("last"/"next"), each only when it names one time.
fn tense(tokens: &[String]) -> [Option<Tense>; 2] {
    let one = |past: bool, future: bool| match (past, future) {
        (true, false) => Some(Tense::Past),
        (false, true) => Some(Tense::Future),
        _ => None,
    };
    let lx = lexicon();
    // "has won", "have shipped": the present perfect speaks of the past too.
    let perfect = |i: usize| {
        tokens
            .get(i + 1)
            .is_some_and(|n| lx.verb_bases(n).iter().any(|b| b != n) && !n.ends_with('s') && !n.ends_with("ing"))
    };
    let aux_past = tokens.iter().enumerate().any(|(i, t)| {
        matches!(t.as_str(), "was" | "were" | "did" | "didn't")
            || (matches!(t.as_str(), "has" | "have" | "had") && perfect(i))
    });
    let aux_future = tokens.iter().enumerate().any(|(i, t)| {
        matches!(t.as_str(), "will" | "shall" | "won't")
            || t.ends_with("'ll")
            || (t == "going" && tokens.get(i + 1).is_some_and(|n| n == "to"))
    });
    let word_past = tokens.iter().any(|t| {
        matches!(
            t.as_str(),
            "previous"
                | "ago"
                | "yesterday"
                | "prior"
                | "last"
                | "latest"
                | "former"
                | "ended"
                | "earlier"
                | "past"
                | "recently"
        )
    });
    let word_future = tokens.iter().enumerate().any(|(i, t)| {
        matches!(t.as_str(), "upcoming" | "tomorrow" | "next" | "soon" | "future")
            || (matches!(t.as_str(), "expected" | "predicted" | "forecast")
                && tokens.get(i + 1).is_some_and(|n| n == "to"))
            || (matches!(t.as_str(), "coming" | "following")
                && tokens.get(i + 1).is_some_and(|n| TIME_SPANS.contains(&n.as_str())))
    });
    [one(aux_past, aux_future), one(word_past, word_future)]
}

const TIME_SPANS: &[&str] = &[
    "year", "years", "quarter", "quarters", "month", "months", "week", "weeks", "day", "days", "season", "time",
    "release", "version", "election", "meeting", "semester", "term", "decade", "century", "weekend", "night",
];

/// Nouns that make a plural of what follows "of" ("a list of addresses", "a folder of images").
/// Packaging ("a set of", "a pack of") is left out: a product sold as a set is named either way
/// ("a set of six coasters" / "six coasters sold as a set"), and its count is a number.
const COLLECTIONS: &[&str] = &[
    "list",
    "batch",
    "bunch",
    "group",
    "collection",
    "series",
    "folder",
    "directory",
    "array",
    "lot",
    "lots",
    "dozens",
    "hundreds",
    "thousands",
    "millions",
    "stack",
    "pile",
];

/// `a` speaks of every member ("every planet", "all my files", "a list of addresses") where `b`
/// speaks of one ("a planet", "this file", "an address").
fn quantity_differs(a: &[String], b: &[String]) -> bool {
    let lx = lexicon();
    let universal =
        |w: &String| matches!(w.as_str(), "every" | "all" | "each" | "several" | "multiple" | "both" | "many" | "most");
    // "How many" asks for a number and "how much" for an amount: no quantity of things.
    // "most recent" is a superlative, not a quantity.
    let superlative = |t: &[String], i: usize| t[i] == "most" && t.get(i + 1).is_some_and(|n| lx.mostly_adj(n));
    let universal_at = |t: &[String], i: usize| {
        (universal(&t[i]) && !(i > 0 && t[i - 1] == "how") && !superlative(t, i))
            || (t[i] == "of" && i > 0 && COLLECTIONS.contains(&t[i - 1].as_str()))
    };
    if (0..b.len()).any(|i| universal_at(b, i)) {
        return false;
    }
    // A noun a few words after "every"/"all"/"several" in `a` stands a few words after
    // "a"/"one"/"single" in `b` ("delete all my saved addresses" / "delete a saved address"),
    // or singular after "this"/"the"/"my" ("archive all conversations" / "archive this
    // conversation").
    let single = |w: &String| matches!(w.as_str(), "a" | "an" | "one" | "single" | "1" | "any");
    let definite = |w: &String| matches!(w.as_str(), "this" | "that" | "the" | "my" | "your" | "our" | "its");
    // The singular: WordNet's base form, or the word without its plural ending.
    let base = |w: &str| {
        let l = lx.lemma(w);
        if l != w {
            l
        } else {
            stem(w)
        }
    };
    // A compound token ("national_park") stands for its parts.
    let names = |m: &String, noun: &String| {
        base(m) == *noun || (m.contains('_') && m.split('_').any(|part| base(part) == *noun))
    };
    (0..a.len()).filter(|i| universal_at(a, *i)).any(|i| {
        // After a collection ("a list of phone numbers") the noun must head its phrase in `b`
        // ("a phone number", not "a number list").
        let collection = a[i] == "of";
        // A collection's members: the noun phrase after "of", up to a preposition or clause.
        let ends = |w: &String| PREPOSITIONS.contains(&w.as_str()) || matches!(w.as_str(), "and" | "that" | "which");
        let window = &a[i + 1..a.len().min(i + 5)];
        let window = if collection { &window[..window.iter().position(ends).unwrap_or(window.len())] } else { window };
        window.iter().any(|n| {
            let noun = base(n);
            b.iter().enumerate().any(|(j, m)| {
                let before = &b[j.saturating_sub(3)..j];
                if !names(m, &noun) {
                    return false;
                }
                if collection {
                    let modifier = |next: &String| {
                        lx.is_noun(next)
                            && !PREPOSITIONS.contains(&next.as_str())
                            && !STOPWORDS.contains(&next.as_str())
                    };
                    return before.iter().any(single) && !b.get(j + 1).is_some_and(modifier);
                }
                before.iter().any(single) || (*m == noun && lx.is_noun(&noun) && before.iter().any(definite))
            })
        })
    })
}

/// `a` picks one of several ("one of the moons of Jupiter") where `b` speaks of them all ("the
/// moons of Jupiter").
fn partitive_differs(a: &[String], b: &[String]) -> bool {
    let lx = lexicon();
    let picks = |t: &[String]| t.windows(2).any(|w| matches!(w[0].as_str(), "one" | "1" | "any") && w[1] == "of");
    if !picks(a) || picks(b) {
        return false;
    }
    (0..a.len().saturating_sub(1)).filter(|&i| matches!(a[i].as_str(), "one" | "1" | "any") && a[i + 1] == "of").any(
        |i| {
            // A plural noun of `a` after "one of" stands as it is in `b`.
            a[i + 2..a.len().min(i + 6)]
                .iter()
                .any(|n| (lx.lemma(n) != *n || stem(n) != *n) && b.iter().any(|m| m == n))
        },
    )
}

/// Two content words that changed places with every other word the same and in place ("is a
/// tomato a fruit" / "is a fruit a tomato", "pour the milk into the flour" / "the flour into
/// the milk"), unless only a symmetric word stands between them ("cats and dogs").
fn transposed(a: &[String], b: &[String]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff: Vec<usize> = (0..a.len()).filter(|&i| a[i] != b[i]).collect();
    let [i, j] = diff[..] else { return false };
    if a[i] != b[j] || a[j] != b[i] || j == i + 1 {
        return false;
    }
    let content = |w: &String| w.chars().any(char::is_alphanumeric) && !STOPWORDS.contains(&w.as_str());
    let conjunction = |w: &String| matches!(w.as_str(), "and" | "or" | "&" | "vs" | "versus" | "with" | "nor" | ",");
    let article = |w: &String| matches!(w.as_str(), "a" | "an" | "the");
    let between = &a[i + 1..j];
    let symmetric = between.iter().any(conjunction) && between.iter().all(|w| conjunction(w) || article(w));
    content(&a[i]) && content(&a[j]) && !symmetric
}

/// The same request with nouns singular in one text and plural in the other, every other word
/// the same (or a verb agreeing with them): "fix the failing test" / "fix the failing tests", "translate this sentence" /
/// "translate these sentences". Determiners are left out of the comparison.
fn number_differs(a: &[String], b: &[String]) -> bool {
    let lx = lexicon();
    let det = |w: &&String| {
        !matches!(w.as_str(), "a" | "an" | "the" | "this" | "these" | "that" | "those" | "one" | "some" | "any")
    };
    let (a, b): (Vec<&String>, Vec<&String>) = (a.iter().filter(det).collect(), b.iter().filter(det).collect());
    if a.len() != b.len() {
        return false;
    }
    // The verb agrees with the noun: "what is a good name" / "what are good names".
    fn agree(w: &str) -> &str {
        match w {
            "are" => "is",
            "were" => "was",
            "have" => "has",
            "do" => "does",
            other => other,
        }
    }
    let mut changed = 0;
    for (x, y) in a.iter().zip(&b) {
        if x == y || agree(x) == agree(y) {
            continue;
        }
        // The singular: WordNet's base form, or the word without its plural ending.
        let base = |w: &str| {
            let l = lx.lemma(w);
            if l != w {
                l
            } else {
                stem(w)
            }
        };
        let (lx_, ly) = (base(x), base(y));
        let plural = |w: &String, l: &String| w != l && w.ends_with('s');
        if lx_ == ly && lx.is_noun(&lx_) && plural(x, &lx_) != plural(y, &ly) {
            changed += 1;
        } else {
            return false;
        }
    }
    changed >= 1
}

/// Words as the swap check compares them: lemmas, without articles and possessives.
fn lemmas(tokens: &[String]) -> Vec<String> {
    let lx = lexicon();
    tokens
        .iter()
        .filter(|t| !matches!(t.as_str(), "a" | "an" | "the" | "my" | "your" | "our" | "their" | "his" | "her" | "its"))
        .map(|t| match t.as_str() {
            "is" | "are" | "was" | "were" | "am" | "be" | "been" => "be".to_string(),
            _ => lx.lemma(t),
        })
        .collect()
}

/// Glue that neither makes a phrase on its own nor, alone between two phrases, a frame.
const GLUE: &[&str] = &["be", "do", "to", "of", "for", "in", "on", "at", "by", "with", "from", "and", "or", "'s"];

/// `a` reads "P X M Y" and `b` reads "Y M X" with the same frame M between them: two words or
/// phrases (up to three words each) changed places around identical words ("exchange dollars
/// for yen" / "exchange yen for dollars", "a cat chasing a dog" / "a dog chasing a cat",
/// "rebase main onto dev" / "rebase dev onto main"). A frame of only "and"/"or" is symmetric
/// ("between X and Y") and does not count.
fn swapped_spans(a: &[String], b: &[String]) -> bool {
    let phrase = |s: &[String]| s.iter().any(|w| !GLUE.contains(&w.as_str()) && !STOPWORDS.contains(&w.as_str()));
    let symmetric =
        |m: &[String]| m.iter().all(|w| matches!(w.as_str(), "and" | "or" | "&" | "plus" | "between" | "both"));
    let mut at: std::collections::HashMap<&str, Vec<usize>> = std::collections::HashMap::new();
    for (k, w) in b.iter().enumerate() {
        at.entry(w.as_str()).or_default().push(k);
    }
    let contains = |hay: &[String], needle: &[&String]| {
        hay.windows(needle.len()).any(|w| w.iter().zip(needle).all(|(x, y)| x == *y))
    };
    for i in 0..a.len() {
        for l1 in 1..=3 {
            for m in 1..=4 {
                for l2 in 1..=3 {
                    let end = i + l1 + m + l2;
                    if end > a.len() {
                        continue;
                    }
                    let (s1, mid, s2) = (&a[i..i + l1], &a[i + l1..i + l1 + m], &a[i + l1 + m..end]);
                    if s1 == s2 || !phrase(s1) || !phrase(s2) || symmetric(mid) {
                        continue;
                    }
                    // Glue alone between the phrases only counts as a frame when it is one word
                    // that orders its operands ("X for Y", "X to Y", "X into Y").
                    if mid.iter().all(|w| GLUE.contains(&w.as_str()) || STOPWORDS.contains(&w.as_str())) && m > 1 {
                        continue;
                    }
                    // A frame relates its two sides: a preposition, a verb or a number. Between
                    // modifiers ("long beige trench coat" / "trench coat, beige, long") it is a list.
                    if !mid.iter().any(|w| relational(w)) {
                        continue;
                    }
                    let Some(starts) = at.get(s2[0].as_str()) else { continue };
                    let n = s1.len() + mid.len() + s2.len();
                    let in_b = starts.iter().any(|&k| {
                        k + n <= b.len() && b[k..k + n].iter().zip(s2.iter().chain(mid).chain(s1)).all(|(x, y)| x == y)
                    });
                    if !in_b {
                        continue;
                    }
                    let swapped: Vec<&String> = s2.iter().chain(mid).chain(s1).collect();
                    if in_b && !contains(a, &swapped) {
                        let original: Vec<&String> = s1.iter().chain(mid).chain(s2).collect();
                        if !contains(b, &original) {
                            return true;
                        }
                    }
                }
            }
        }
    }
    false
}

/// What each text says that nothing in the other covers: its content words outside the other's
/// (`only_a`, `only_b`) that are no synonym, verb of one family, form, abbreviation or
/// misspelling of a word of the other, and no filler.
fn loose(
    only_a: &BTreeSet<String>,
    only_b: &BTreeSet<String>,
    sa: &BTreeSet<String>,
    sb: &BTreeSet<String>,
) -> (Vec<String>, Vec<String>) {
    let lx = lexicon();
    // What one text says that nothing in the other covers (a synonym, or a word of one
    // derivation: "shipping"/"shipment").
    let covered = |x: &String, other: &BTreeSet<String>| {
        FILLERS.contains(&x.as_str())
            || other.iter().any(|y| {
                lx.synonyms(x, y)
                    || (lx.related_verbs(x, y) && !lx.mostly_noun(x) && !lx.mostly_noun(y))
                    || (lx.knows(x)
                        && lx.knows(y)
                        && x.len() >= 5
                        && y.len() >= 5
                        && x.chars().take(5).eq(y.chars().take(5)))
                    || abbreviates(x, y)
                    || abbreviates(y, x)
                    || typo(x, y)
                    || lx
                        .verb_bases(x)
                        .iter()
                        .chain([x])
                        .any(|bx| lx.verb_bases(y).iter().chain([y]).any(|by| bx == by))
            })
    };
    let loose_a: Vec<String> = only_a.iter().filter(|x| !covered(x, sb)).cloned().collect();
    let loose_b: Vec<String> = only_b.iter().filter(|y| !covered(y, sa)).cloned().collect();
    (loose_a, loose_b)
}

/// The same words in the same order but one, and that one no synonym, form or misspelling of
/// the other: "move money to my savings" / "from my savings", "bring food on the plane" /
/// "off the plane", "a poem about rain" / "about snow". A rewording seldom changes a single
/// word in place, so here only WordNet synonyms, verbs of one family ("delete"/"remove") and
/// misspellings count as the same word, and
/// only function words that do not change a request (articles, possessives, modals, question
/// words) may change freely.
fn one_word_changed(a: &[String], b: &[String], same: impl Fn(&str, &str) -> bool) -> bool {
    if a.len() != b.len() || a.len() < 3 {
        return false;
    }
    let mut diff = a.iter().zip(b).filter(|(x, y)| x != y);
    let Some((x, y)) = diff.next() else { return false };
    if diff.next().is_some() {
        return false;
    }
    let free = |w: &str| {
        matches!(
            w,
            "this"
                | "that"
                | "these"
                | "those"
                | "some"
                | "any"
                | "can"
                | "could"
                | "may"
                | "might"
                | "would"
                | "should"
                | "do"
                | "how"
                | "what"
                | "which"
                | "i"
                | "we"
                | "me"
                | "us"
                | "you"
                | "please"
                | "pls"
                | "kindly"
        ) || FILLERS.contains(&w)
    };
    let lx = lexicon();
    let numberish = |w: &str| w.starts_with(|c: char| c.is_ascii_digit());
    !(same(x, y)
        || free(x)
        || free(y)
        || numberish(x)
        || numberish(y)
        || lx.synonyms(x, y)
        || (lx.related_verbs(x, y) && !lx.mostly_noun(x) && !lx.mostly_noun(y))
        || typo(x, y)
        || abbreviates(x, y)
        || abbreviates(y, x))
}

/// "How many A are in a B" / "how many B are in an A": what a "how many" (or "how much")
/// question counts is a role, whatever the words around it ("a mile is how many feet long"
/// still counts feet). Both texts count something, each counts a word the other has, and not
/// the same one.
fn counted_swapped(a: &[String], b: &[String]) -> bool {
    let counted = |t: &[String]| -> Option<String> {
        let at = t.windows(2).position(|w| w[0] == "how" && matches!(w[1].as_str(), "many" | "much"))?;
        t[at + 2..].iter().take(2).find(|w| !STOPWORDS.contains(&w.as_str()) && !GLUE.contains(&w.as_str())).cloned()
    };
    match (counted(a), counted(b)) {
        (Some(x), Some(y)) => x != y && b.contains(&x) && a.contains(&y),
        _ => false,
    }
}

/// Two content words that changed places while a word between them stayed between them: in
/// `a` "x ... z ... y", in `b` "y ... z ... x" ("how many cups is 3 pints" / "how many pints is
/// 3 cups", "a seller reviewing a buyer" / "a buyer reviewing a seller", "more fog and less
/// sun" / "more sun and less fog"). This is the alignment form of `swapped_spans`: the words
/// and what lies between them may differ in length and kind. A clause moved to the other end
/// of the sentence ("In Rome, what should I see?" / "What should I see in Rome?") crosses words
/// too, but nothing that stood between them stays between them. Only words that occur once in
/// each text count, and a symmetric conjunction ("and", "or", "between") alone is no frame.
fn crossed_words(a_tokens: &[String], b_tokens: &[String]) -> bool {
    let lx = lexicon();
    // (lemma, token) without articles and possessives, as `lemmas` reads them.
    let read = |t: &[String]| -> Vec<(String, String)> {
        let kept: Vec<String> = t
            .iter()
            .filter(|t| {
                !matches!(t.as_str(), "a" | "an" | "the" | "my" | "your" | "our" | "their" | "his" | "her" | "its")
            })
            .cloned()
            .collect();
        lemmas(&kept).into_iter().zip(kept).collect()
    };
    let (a, b) = (read(a_tokens), read(b_tokens));
    let once = |t: &[(String, String)], w: &String| t.iter().filter(|x| x.0 == *w).count() == 1;
    let word = |w: &String| {
        !GLUE.contains(&w.as_str())
            && !STOPWORDS.contains(&w.as_str())
            && !FILLERS.contains(&w.as_str())
            && w.chars().any(|c| c.is_alphanumeric())
    };
    // What relates two operands: a verb ("chasing", "reviews"), a preposition that orders them
    // ("onto", "than") or a comparative ("less"). Not the copula or an auxiliary ("how many
    // feet are in a mile" / "a mile is how many feet"), not "in", "of" or "for", whose operands
    // a rewording moves freely ("text for this product" / "describe this product for the
    // page"), not a symmetric conjunction, and not a word that is a noun as it stands ("a set of
    // 4", "duvet cover").
    let frame = |(lemma, token): &(String, String)| {
        let w = lemma.as_str();
        if matches!(w, "more" | "less" | "fewer" | "than") {
            return true;
        }
        if matches!(w, "to" | "from" | "into" | "onto" | "over" | "against" | "toward" | "towards" | "by" | "per") {
            return true;
        }
        let inflected = token != lemma && !lx.verb_bases(token).is_empty() && !token.ends_with('s');
        !matches!(w, "be" | "do" | "have" | "get" | "make" | "need" | "want" | "give")
            && !PREPOSITIONS.contains(&w)
            && lx.is_verb(w)
            && (inflected || !lx.is_noun(w))
            && !lx.mostly_adj(w)
    };
    // Positions in `b` of the words of `a` that occur once in both.
    let aligned: Vec<(usize, usize)> = a
        .iter()
        .enumerate()
        .filter(|(_, w)| once(&a, &w.0) && once(&b, &w.0))
        .filter_map(|(i, w)| b.iter().position(|x| x.0 == w.0).map(|j| (i, j)))
        .collect();
    for (p, &(ix, jx)) in aligned.iter().enumerate() {
        if !word(&a[ix].0) {
            continue;
        }
        for &(iy, jy) in &aligned[p + 1..] {
            // x before y in `a`, after it in `b`.
            if !word(&a[iy].0) || jy >= jx {
                continue;
            }
            // The frame word stands within three words of both operands, in both texts.
            let near = |from: usize, to: usize| to > from && to - from <= 3;
            let stays_between = aligned
                .iter()
                .any(|&(iz, jz)| near(ix, iz) && near(iz, iy) && near(jy, jz) && near(jz, jx) && frame(&a[iz]));
            if stays_between {
                if debug() {
                    eprintln!("crossed {} / {}", a[ix].0, a[iy].0);
                }
                return true;
            }
        }
    }
    false
}

/// English prepositions (a closed class): the words that relate two phrases.
const PREPOSITIONS: &[&str] = &[
    "about",
    "above",
    "across",
    "after",
    "against",
    "along",
    "among",
    "around",
    "as",
    "at",
    "before",
    "behind",
    "below",
    "beneath",
    "beside",
    "between",
    "beyond",
    "by",
    "despite",
    "down",
    "during",
    "except",
    "for",
    "from",
    "in",
    "inside",
    "into",
    "like",
    "near",
    "of",
    "off",
    "on",
    "onto",
    "out",
    "outside",
    "over",
    "past",
    "per",
    "since",
    "than",
    "through",
    "throughout",
    "till",
    "to",
    "toward",
    "towards",
    "under",
    "underneath",
    "until",
    "unto",
    "up",
    "upon",
    "versus",
    "via",
    "vs",
    "with",
    "within",
    "without",
];

/// A short name written in capitals that abbreviates a word ("DB" / "database", "Aug" /
/// "August"): its letters in order, starting with the word's first.
fn initialism(short: &str, long: &str) -> bool {
    let mut rest = long.chars();
    (2..=4).contains(&short.len())
        && long.len() > short.len()
        && short.chars().next() == long.chars().next()
        && short.chars().all(|c| rest.any(|d| d == c))
}

/// `short` is an abbreviation of `long`: its letters in order, the same first letter, and
/// `long` a word the lexicon knows ("addr"/"address", "bldg"/"building", "yr"/"year").
fn abbreviates(short: &str, long: &str) -> bool {
    let lx = lexicon();
    if short.len() < 2 || short.len() + 2 > long.len() || short.len() > 5 || !lx.knows(long) {
        return false;
    }
    if short.chars().next() != long.chars().next() || !short.chars().all(|c| c.is_ascii_alphabetic()) {
        return false;
    }
    // A word of its own ("vegan") abbreviates only as a prefix ("temp", "min").
    if lx.knows(short) {
        return short.len() >= 3 && long.starts_with(short);
    }
    let mut rest = long.chars();
    short.chars().all(|c| rest.any(|d| d == c))
}

/// The texts share a frame: a common beginning and end that together are most of the shorter
/// text, with something different between them on both sides.
fn same_frame(a: &[String], b: &[String]) -> bool {
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let suffix = a.iter().rev().zip(b.iter().rev()).take_while(|(x, y)| x == y).count();
    let shorter = a.len().min(b.len());
    let (prefix, suffix) = (prefix.min(shorter), suffix.min(shorter - prefix.min(shorter)));
    prefix + suffix >= 3 && 2 * (prefix + suffix) >= shorter && prefix + suffix < shorter
}

fn relational(w: &str) -> bool {
    w.split('_').any(|p| PREPOSITIONS.contains(&p))
        || GLUE.contains(&w)
        || STOPWORDS.contains(&w)
        || w.starts_with(|c: char| c.is_ascii_digit())
        || lexicon().is_verb_form(w)
}

/// One word misspelt as the other: one of them unknown to the lexicon, a small edit apart.
fn typo(x: &str, y: &str) -> bool {
    let lx = lexicon();
    if lx.knows(x) && lx.knows(y) {
        return false;
    }
    let longest = x.len().max(y.len());
    longest >= 4 && edit_distance(x, y) <= if longest >= 7 { 2 } else { 1 }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(row[j + 1] + 1);
            prev = cur;
        }
    }
    row[b.len()]
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
