//! What a voice is (engine, gender, language, synthesis method) and what the names callers use
//! mean: hosted TTS services name voices after people ("rachel"), so such a name selects the
//! installed default voice of that person's gender instead of failing.

use serde::Serialize;

/// A voice's gender, as its engine's documentation gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Gender {
    /// A female speaker.
    Female,
    /// A male speaker.
    Male,
}

impl std::fmt::Display for Gender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Gender::Female => "female",
            Gender::Male => "male",
        })
    }
}

/// How a voice is synthesised, best-sounding last: the default of a gender is the installed
/// voice with the best method (the comparison behind this order is in README.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Synthesis {
    /// Formant synthesis (espeak-ng): small and fast, audibly robotic.
    Formant,
    /// Concatenated diphones (Festival's and Flite's `kal`).
    Diphone,
    /// Statistical parametric, CMU clustergen (Flite's `slt`, `rms`, `awb`).
    Clustergen,
    /// Statistical parametric, HMM-based (Festival's HTS voices).
    Hts,
}

/// One installed voice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct VoiceInfo {
    /// `engine:name`, which selects exactly this voice.
    pub id: String,
    /// The engine's name for it.
    pub name: String,
    /// The engine (`festival`, `flite`, `espeak-ng`).
    pub engine: String,
    /// The speaker's gender, when the engine says.
    pub gender: Option<Gender>,
    /// BCP 47 language tag (`en-US`), or the engine's language name.
    pub language: String,
    /// How it is synthesised.
    pub synthesis: Synthesis,
}

impl VoiceInfo {
    /// A voice of `engine`.
    pub fn new(
        engine: &str,
        name: &str,
        gender: Option<Gender>,
        language: &str,
        synthesis: Synthesis,
    ) -> Self {
        VoiceInfo {
            id: format!("{engine}:{name}"),
            name: name.to_owned(),
            engine: engine.to_owned(),
            gender,
            language: language.to_owned(),
            synthesis,
        }
    }
}

/// Generic names for the default voice of a gender.
const FEMALE_WORDS: [&str; 3] = ["female", "woman", "f"];
const MALE_WORDS: [&str; 3] = ["male", "man", "m"];

/// Voice names of hosted TTS services (ElevenLabs' premade voices, Amazon Polly's and Azure's
/// English voices) and other common given names, by the gender of the voice they name.
const FEMALE_NAMES: &[&str] = &[
    "rachel",
    "domi",
    "bella",
    "elli",
    "dorothy",
    "charlotte",
    "emily",
    "freya",
    "gigi",
    "glinda",
    "grace",
    "lily",
    "matilda",
    "mimi",
    "nicole",
    "serena",
    "sarah",
    "alice",
    "aria",
    "jessica",
    "laura",
    "river",
    "joanna",
    "salli",
    "kimberly",
    "kendra",
    "ivy",
    "ruth",
    "danielle",
    "amy",
    "emma",
    "olivia",
    "ava",
    "jenny",
    "michelle",
    "sara",
    "nancy",
    "jane",
    "amber",
    "ashley",
    "cora",
    "elizabeth",
    "monica",
    "samantha",
    "susan",
    "karen",
    "victoria",
    "allison",
    "anna",
    "kate",
    "mary",
    "linda",
    "lisa",
];
const MALE_NAMES: &[&str] = &[
    "adam",
    "antoni",
    "arnold",
    "josh",
    "sam",
    "clyde",
    "dave",
    "fin",
    "george",
    "harry",
    "james",
    "jeremy",
    "joseph",
    "liam",
    "michael",
    "patrick",
    "paul",
    "thomas",
    "daniel",
    "brian",
    "bill",
    "callum",
    "charlie",
    "chris",
    "eric",
    "roger",
    "will",
    "matthew",
    "justin",
    "joey",
    "kevin",
    "stephen",
    "gregory",
    "brandon",
    "christopher",
    "guy",
    "jason",
    "tony",
    "davis",
    "andrew",
    "john",
    "david",
    "robert",
    "mark",
    "peter",
    "tom",
    "alex",
    "alan",
];

/// The gender a requested name stands for: a generic word (`female`, `male`) or a common voice
/// or given name (`rachel`, `adam`); `None` for anything else.
pub fn gender_of_name(name: &str) -> Option<Gender> {
    let name = name.trim().to_ascii_lowercase();
    let is = |list: &[&str]| list.contains(&name.as_str());
    if is(&FEMALE_WORDS) || is(FEMALE_NAMES) {
        Some(Gender::Female)
    } else if is(&MALE_WORDS) || is(MALE_NAMES) {
        Some(Gender::Male)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_have_genders_and_other_words_none() {
        assert_eq!(gender_of_name("rachel"), Some(Gender::Female));
        assert_eq!(gender_of_name(" Rachel "), Some(Gender::Female));
        assert_eq!(gender_of_name("Joanna"), Some(Gender::Female));
        assert_eq!(gender_of_name("adam"), Some(Gender::Male));
        assert_eq!(gender_of_name("male"), Some(Gender::Male));
        assert_eq!(gender_of_name("nobody"), None);
        assert_eq!(gender_of_name(""), None);
        for name in FEMALE_NAMES {
            assert!(!MALE_NAMES.contains(name), "{name} in both lists");
        }
    }
}
