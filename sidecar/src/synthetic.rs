//! Deterministic pseudo-random unit vectors (xorshift) for tests and benchmarks: the same
//! seed gives the same vector on every machine, with no random-number crate.

pub fn unit_vector(seed: u64, dim: usize) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let v: Vec<f32> = (0..dim)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 2000) as f32 / 1000.0 - 1.0
        })
        .collect();
    let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
    v.into_iter().map(|a| a / n).collect()
}

/// `n` distinct request texts from templates of the four kinds of request the cache sees
/// (coding questions, product captions, conversions, support), for tests and benchmarks that
/// need many stored texts that read like real ones. Deterministic: text `i` is always the same.
pub fn request_text(i: usize) -> String {
    const VERBS: [&str; 24] = [
        "reverse",
        "sort",
        "filter",
        "parse",
        "serialize",
        "deduplicate",
        "flatten",
        "merge",
        "split",
        "join",
        "validate",
        "compress",
        "encrypt",
        "hash",
        "paginate",
        "cache",
        "log",
        "profile",
        "benchmark",
        "mock",
        "stream",
        "batch",
        "retry",
        "debounce",
    ];
    const OBJECTS: [&str; 30] = [
        "a list",
        "a dictionary",
        "a JSON file",
        "a CSV file",
        "an HTTP response",
        "a string",
        "a date",
        "a linked list",
        "a binary tree",
        "a matrix",
        "a database query",
        "a websocket message",
        "an image",
        "a log file",
        "a config file",
        "a YAML document",
        "an XML feed",
        "a PDF",
        "a tarball",
        "a queue",
        "a stack",
        "a set",
        "a graph",
        "a heap",
        "a URL",
        "a cookie",
        "a token",
        "a form",
        "an array",
        "a tuple",
    ];
    const LANGS: [&str; 14] = [
        "Python",
        "Rust",
        "Go",
        "Java",
        "JavaScript",
        "TypeScript",
        "C#",
        "Ruby",
        "PHP",
        "Kotlin",
        "Swift",
        "Scala",
        "Elixir",
        "Haskell",
    ];
    const TONES: [&str; 10] =
        ["playful", "elegant", "short", "witty", "minimal", "warm", "bold", "luxurious", "friendly", "formal"];
    const COLOURS: [&str; 16] = [
        "red", "navy", "olive", "ivory", "black", "white", "teal", "mustard", "coral", "charcoal", "beige", "pink",
        "green", "grey", "burgundy", "lavender",
    ];
    const MATERIALS: [&str; 12] =
        ["leather", "canvas", "linen", "wool", "cotton", "silk", "denim", "suede", "velvet", "ceramic", "oak", "steel"];
    const PRODUCTS: [&str; 24] = [
        "tote bag",
        "backpack",
        "sneaker",
        "jacket",
        "scarf",
        "lamp",
        "vase",
        "mug",
        "wallet",
        "belt",
        "hat",
        "dress",
        "shirt",
        "sofa",
        "chair",
        "rug",
        "watch",
        "notebook",
        "planter",
        "blanket",
        "pillow",
        "apron",
        "umbrella",
        "candle holder",
    ];
    const UNITS: [(&str, &str); 12] = [
        ("km", "miles"),
        ("kg", "pounds"),
        ("USD", "EUR"),
        ("GBP", "JPY"),
        ("litres", "gallons"),
        ("cm", "inches"),
        ("Celsius", "Fahrenheit"),
        ("metres", "feet"),
        ("grams", "ounces"),
        ("EUR", "CHF"),
        ("mph", "km/h"),
        ("MB", "GB"),
    ];
    const SUPPORT: [&str; 20] = [
        "reset my password",
        "change my email address",
        "cancel my subscription",
        "update my card",
        "download my invoice",
        "close my account",
        "change my delivery address",
        "track my order",
        "return an item",
        "apply a coupon",
        "enable two-factor login",
        "change my username",
        "merge two accounts",
        "export my data",
        "add a team member",
        "remove a team member",
        "change my plan",
        "pause my subscription",
        "report a bug",
        "contact support",
    ];
    const PLACES: [&str; 10] = ["web", "iOS", "Android", "desktop", "Windows", "Mac", "Linux", "tablet", "TV", "watch"];
    let k = i / 4;
    match i % 4 {
        0 => {
            let (v, o, l) =
                (k % VERBS.len(), (k / VERBS.len()) % OBJECTS.len(), (k / (VERBS.len() * OBJECTS.len())) % LANGS.len());
            let round = k / (VERBS.len() * OBJECTS.len() * LANGS.len());
            let tail = if round == 0 { String::new() } else { format!(" (version {round})") };
            format!("How do I {} {} in {}{tail}?", VERBS[v], OBJECTS[o], LANGS[l])
        }
        1 => {
            let t = k % TONES.len();
            let c = (k / TONES.len()) % COLOURS.len();
            let m = (k / (TONES.len() * COLOURS.len())) % MATERIALS.len();
            let p = (k / (TONES.len() * COLOURS.len() * MATERIALS.len())) % PRODUCTS.len();
            let round = k / (TONES.len() * COLOURS.len() * MATERIALS.len() * PRODUCTS.len());
            let size = if round == 0 { String::new() } else { format!(" in size {}", round + 1) };
            format!("Write a {} caption for a {} {} {}{size}.", TONES[t], COLOURS[c], MATERIALS[m], PRODUCTS[p])
        }
        2 => {
            let (a, b) = UNITS[k % UNITS.len()];
            format!("Convert {} {a} to {b}", k / UNITS.len() + 1)
        }
        _ => {
            let s = k % SUPPORT.len();
            let p = (k / SUPPORT.len()) % PLACES.len();
            let order = k / (SUPPORT.len() * PLACES.len());
            format!("How do I {} on the {} app? My order number is {}.", SUPPORT[s], PLACES[p], 10_000 + order)
        }
    }
}
