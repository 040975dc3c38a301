"""Fixed vocabularies of the method: CheXpert observations, label states, MedKLIP entities and anatomies.

Orders matter: they index classifier outputs, prompt tokens and MedKLIP checkpoints (docs/method.md §10).
"""

# The 14 CheXpert observations in CheXbert / PromptMRG order (docs/method.md §10.3).
CHEXPERT_14 = (
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
    "No Finding",
)

# Label states, index = value stored in `labels` (docs/method.md §4.3): blank, positive, negative, uncertain.
STATES = ("blank", "positive", "negative", "uncertain")
STATE_TOKENS = ("[BLA]", "[POS]", "[NEG]", "[UNC]")
BLANK, POSITIVE, NEGATIVE, UNCERTAIN = range(4)

# MedKLIP's 75 observation entities, in MedKLIP's query order (docs/method.md §10.1).
ENTITIES_75 = (
    "normal", "clear", "sharp", "sharply", "unremarkable", "intact", "stable", "free", "effusion",
    "opacity", "pneumothorax", "edema", "atelectasis", "tube", "consolidation", "process",
    "abnormality", "enlarge", "tip", "low", "pneumonia", "line", "congestion", "catheter",
    "cardiomegaly", "fracture", "air", "tortuous", "lead", "disease", "calcification", "prominence",
    "device", "engorgement", "picc", "clip", "elevation", "expand", "nodule", "wire", "fluid",
    "degenerative", "pacemaker", "thicken", "marking", "scar", "hyperinflate", "blunt", "loss",
    "widen", "collapse", "density", "emphysema", "aerate", "mass", "crowd", "infiltrate", "obscure",
    "deformity", "hernia", "drainage", "distention", "shift", "stent", "pressure", "lesion",
    "finding", "borderline", "hardware", "dilation", "chf", "redistribution", "aspiration",
    "tail_abnorm_obs", "excluded_obs",
)

# MedKLIP's 51 anatomical positions (docs/method.md §10.2).
ANATOMIES_51 = (
    "trachea", "left_hilar", "right_hilar", "hilar_unspec", "left_pleural", "right_pleural",
    "pleural_unspec", "heart_size", "heart_border", "left_diaphragm", "right_diaphragm",
    "diaphragm_unspec", "retrocardiac", "lower_left_lobe", "upper_left_lobe", "lower_right_lobe",
    "middle_right_lobe", "upper_right_lobe", "left_lower_lung", "left_mid_lung", "left_upper_lung",
    "left_apical_lung", "left_lung_unspec", "right_lower_lung", "right_mid_lung", "right_upper_lung",
    "right_apical_lung", "right_lung_unspec", "lung_apices", "lung_bases", "left_costophrenic",
    "right_costophrenic", "costophrenic_unspec", "cardiophrenic_sulcus", "mediastinal", "spine",
    "clavicle", "rib", "stomach", "right_atrium", "right_ventricle", "aorta", "svc", "interstitium",
    "parenchymal", "cavoatrial_junction", "cardiopulmonary", "pulmonary", "lung_volumes",
    "unspecified", "other",
)
UNSPECIFIED_POSITION = ANATOMIES_51.index("unspecified")

assert len(CHEXPERT_14) == 14 and len(ENTITIES_75) == 75 and len(ANATOMIES_51) == 51
