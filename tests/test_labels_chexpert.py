"""Rule labeler: mentions, negation and uncertainty scoping, IU's XXXX tokens, "No Finding", aux classes."""

import numpy as np
import pytest

from revtaf.data.clean import clean_report_iu
from revtaf.labels import LABEL_NAMES_18, RuleLabeler, label_reports, labels_to_dict
from revtaf.labels.chexpert import sentences

BLA, POS, NEG, UNC = "blank", "positive", "negative", "uncertain"


def states(report: str) -> dict[str, str]:
    return labels_to_dict(RuleLabeler().label_report(report))


@pytest.mark.parametrize(
    "report, expected",
    [
        # de-identification tokens are plain words: neither cues nor mentions
        ("No XXXX of pleural effusion.", {"Pleural Effusion": NEG}),
        ("XXXX opacity in the right lower lobe.", {"Lung Opacity": POS}),
        ("There are XXXX bibasilar opacities.", {"Lung Opacity": POS}),
        # pre-negation over a list, to the end of the clause
        ("No focal airspace consolidation, pleural effusion, or pneumothorax.",
         {"Consolidation": NEG, "Pleural Effusion": NEG, "Pneumothorax": NEG, "Lung Opacity": BLA}),
        ("The lungs are free of focal airspace disease.", {"Lung Opacity": NEG}),
        ("Negative for pneumothorax.", {"Pneumothorax": NEG}),
        ("There is no focal air space opacity to suggest a pneumonia.", {"Lung Opacity": NEG, "Pneumonia": NEG}),
        ("The heart is not enlarged.", {"Cardiomegaly": NEG}),
        # post-negation
        ("Pleural effusion or pneumothorax is not seen.", {"Pleural Effusion": NEG, "Pneumothorax": NEG}),
        ("Previously identified small right pneumothorax is not visualized on today's exam.", {"Pneumothorax": NEG}),
        ("Previously seen left lower lobe consolidation has resolved.", {"Consolidation": NEG}),
        # the scope ends at a clause boundary or a new assertion
        ("No pneumothorax, however there is a small right pleural effusion.", {"Pneumothorax": NEG, "Pleural Effusion": POS}),
        ("No pneumothorax is seen. There is a small right effusion.", {"Pneumothorax": NEG, "Pleural Effusion": POS}),
        ("No pleural effusion with mild cardiomegaly.", {"Pleural Effusion": NEG, "Cardiomegaly": POS}),
        ("Lungs are clear of consolidation and the heart is enlarged.", {"Consolidation": NEG, "Cardiomegaly": POS}),
        # a post-negation's "not" only negates what precedes it
        ("Small axillary densities not seen on the previous exam, healed right rib fracture noted.",
         {"Fracture": POS}),
        # pseudo-negation
        ("No interval change in the small left pleural effusion.", {"Pleural Effusion": POS}),
        # uncertainty, and strong uncertainty that beats negation
        ("Pneumonia cannot be excluded.", {"Pneumonia": UNC}),
        ("Cannot exclude a small left effusion.", {"Pleural Effusion": UNC}),
        ("Right basilar opacity may represent atelectasis or pneumonia.",
         {"Lung Opacity": POS, "Atelectasis": UNC, "Pneumonia": UNC}),
        ("Possible small bilateral pleural effusions.", {"Pleural Effusion": UNC}),
        ("Questionable left lower lobe infiltrate.", {"Lung Opacity": UNC}),
        ("Subsegmental atelectasis versus scarring in the left base.", {"Atelectasis": UNC}),
        ("Findings suggest pulmonary edema.", {"Edema": UNC}),
        ("Atelectasis is likely.", {"Atelectasis": UNC}),
        ("An age indeterminate fracture of the right 9th rib.", {"Fracture": POS}),
        # normal phrasings imply negatives where CheXpert reads them so
        ("Heart size within normal limits.", {"Cardiomegaly": NEG}),
        ("The heart and mediastinum are normal.", {"Cardiomegaly": NEG, "Enlarged Cardiomediastinum": NEG}),
        ("Normal heart size.", {"Cardiomegaly": NEG}),
        ("The lungs are clear.", {"Lung Opacity": BLA, "Consolidation": BLA, "No Finding": POS}),
        ("The heart size is upper limits of normal.", {"Cardiomegaly": UNC}),
        # "borderline" grades cardiomegaly (MeSH files it as Cardiomegaly/borderline), it is no hedge
        ("Borderline cardiomegaly.", {"Cardiomegaly": POS}),
        ("The heart is borderline enlarged.", {"Cardiomegaly": POS}),
        ("The cardiac silhouette is mildly enlarged.", {"Cardiomegaly": POS}),
        ("Widened mediastinum.", {"Enlarged Cardiomediastinum": POS}),
        ("Small pericardial effusion.", {"Pleural Effusion": BLA}),
        ("Pulmonary vascular congestion.", {"Edema": POS}),
        ("Calcified nodule in the left upper lobe.", {"Lung Lesion": POS, "Granuloma": POS}),
        ("Apical pleural thickening.", {"Pleural Other": POS}),
        ("Right IJ catheter tip in the SVC. Sternotomy wires.", {"Support Devices": POS}),
        ("Endotracheal tube and NG tube have been removed.", {"Support Devices": NEG}),
        ("Residuals of prior granulomatous infection.", {"Pneumonia": BLA, "Granuloma": POS}),
        ("Degenerative changes of the thoracic spine.", {"Degenerative Changes": POS}),
        ("The aorta is tortuous and calcified.", {"Aortic Tortuosity/Atherosclerosis": POS}),
        ("Low lung volumes with bibasilar atelectasis.", {"Low Lung Volumes": POS, "Atelectasis": POS}),
        ("Lung volumes are normal.", {"Low Lung Volumes": NEG}),
    ],
)
def test_sentence_states(report, expected):
    got = states(report)
    assert {k: got[k] for k in expected} == expected


def test_no_finding_follows_chexpert():
    assert states("No acute cardiopulmonary abnormality.")["No Finding"] == POS
    # devices and the auxiliary classes are no pathology
    assert states("Right PICC line tip in the SVC. Degenerative changes of the spine.")["No Finding"] == POS
    # any positive or uncertain pathology blanks it; a negative one does not
    assert states("Mild cardiomegaly.")["No Finding"] == BLA
    assert states("Possible small left effusion.")["No Finding"] == BLA
    assert states("No pleural effusion.")["No Finding"] == POS


def test_report_level_precedence():
    # positive > uncertain > negative across sentences
    assert states("No pleural effusion. Small left pleural effusion.")["Pleural Effusion"] == POS
    assert states("No pleural effusion. Possible small right effusion.")["Pleural Effusion"] == UNC


def test_raw_and_cleaned_text_agree():
    raw = ("The heart is mildly enlarged. There is no pneumothorax, however a small left pleural effusion is present. "
           "1. Possible right lower lobe pneumonia. 2. No XXXX of edema.")
    a, b = RuleLabeler()([raw, clean_report_iu(raw)])
    np.testing.assert_array_equal(a, b)
    assert labels_to_dict(a)["Pneumonia"] == UNC and labels_to_dict(a)["Edema"] == NEG


def test_sentence_splitting_on_raw_and_cleaned():
    assert sentences("Heart size normal. Lungs clear; no effusion.\nImpression: negative") == [
        "heart size normal", "lungs clear", "no effusion", "impression", "negative"]
    assert sentences("heart size normal . lungs clear .") == ["heart size normal", "lungs clear"]
    assert sentences("A 2.5 cm nodule.") == ["a 2 5 cm nodule"]  # a decimal point ends no sentence


def test_batch_api_and_errors():
    out = label_reports(["Mild cardiomegaly.", "", "No effusion."])
    assert out.dtype == np.int8 and out.shape == (3, len(LABEL_NAMES_18)) == (3, 18)
    assert out[1].tolist() == [0] * 13 + [1] + [0] * 4  # an empty report: nothing but "No Finding"
    with pytest.raises(TypeError):
        label_reports("a single string")
    with pytest.raises(TypeError):
        RuleLabeler().label_report(None)
    with pytest.raises(ValueError):
        labels_to_dict(np.zeros(14, dtype=np.int8))
    with pytest.raises(ValueError):
        labels_to_dict(np.full(18, 4))
