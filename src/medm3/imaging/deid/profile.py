"""Action table of the DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile.

Each line of :data:`_TABLE` names one attribute by its DICOM keyword, the action medm3
applies, and the action code that PS3.15 Table E.1-1 gives it (``-`` marks an attribute
medm3 handles although the Basic Profile does not list it). The table is data: the
engine in :mod:`medm3.imaging.deid.engine` applies it and holds no per-attribute code.

Actions (:class:`Action`):

* ``K`` keep (sequences are still walked and cleaned item by item);
* ``X`` remove the attribute;
* ``Z`` keep it with a zero-length value (an empty sequence for SQ);
* ``D`` replace the value with a dummy of the same VR (see ``DUMMY_VALUES`` in the engine);
  for a sequence, keep it and clean its items (every identifying attribute an item may
  hold is itself in this table);
* ``U`` replace each UID with a keyed ``2.25.`` UID, the same for the same input UID and
  key; for a sequence, keep it and clean its items (UIDs inside are replaced);
* ``P`` replace each value with a keyed pseudonym (``ANON-<hash>``, or
  ``ANONYMOUS^<hash>`` for person names), the same for the same input value and key, so
  patients, studies and orders stay linkable across files. ``P`` is a consistent dummy,
  so it is allowed wherever the profile allows ``D`` or ``Z``.

Compound codes of the profile are resolved to one action per attribute with these rules:

* ``Z/D`` -> ``D`` (a dummy satisfies Type 1 and Type 2 attributes);
* ``X/Z`` -> ``Z`` (the attribute stays present, satisfying Type 2);
* ``X/D`` and ``X/Z/D`` -> ``X`` where the attribute is Type 3 in the common image
  IODs, ``D`` where some IOD makes it Type 1 (Device Serial Number, Acquisition DateTime,
  Observation DateTime, RT treatment dates);
* ``X/Z/U*`` -> ``U`` (reference sequences are kept; the instance UIDs inside are replaced).

Removal (``X``) is always at least as safe as the code asks for, so a ``D`` sequence whose
items may carry free text the table cannot reach (SR Content Sequence, graphic
annotations, person code sequences) is removed rather than kept.

Attributes not in the table are kept, except: private attributes, curve (50xx) and
overlay (60xx) groups, group lengths and command (0000) elements, and public attributes
unknown to the data dictionary, which are removed; and UIDs (VR UI) outside the DICOM
registry (``1.2.840.10008.*``), which are replaced as ``U``.
"""

from __future__ import annotations

from enum import Enum
from types import MappingProxyType


class Action(str, Enum):
    """What the de-identification engine does with one attribute."""

    KEEP = "K"
    REMOVE = "X"
    EMPTY = "Z"
    DUMMY = "D"
    UID = "U"
    PSEUDONYM = "P"


# keyword                                                   medm3  PS3.15
_TABLE = """
# --- Patient identification and demographics ---
PatientName                                                 P   Z
PatientID                                                   P   Z/D
IssuerOfPatientID                                           X   X
IssuerOfPatientIDQualifiersSequence                         X   -
TypeOfPatientID                                             X   -
SourcePatientGroupIdentificationSequence                    X   -
GroupOfPatientsIdentificationSequence                       X   -
PatientBirthDate                                            Z   Z
PatientBirthTime                                            X   X
PatientBirthDateInAlternativeCalendar                       X   X
PatientDeathDateInAlternativeCalendar                       X   X
PatientAlternativeCalendar                                  X   X
PatientSex                                                  Z   Z
PatientSexNeutered                                          Z   X/Z
PatientAge                                                  X   X
PatientSize                                                 X   X
PatientWeight                                               X   X
PatientAddress                                              X   X
PatientBirthName                                            X   X
PatientMotherBirthName                                      X   X
OtherPatientIDs                                             X   X
OtherPatientIDsSequence                                     X   X
OtherPatientNames                                           X   X
PatientTelephoneNumbers                                     X   X
PatientTelecomInformation                                   X   X
PatientInsurancePlanCodeSequence                            X   X
InsurancePlanIdentification                                 X   X
MedicalRecordLocator                                        X   X
MilitaryRank                                                X   X
BranchOfService                                             X   X
CountryOfResidence                                          X   X
RegionOfResidence                                           X   X
EthnicGroup                                                 X   X
Occupation                                                  X   X
PatientReligiousPreference                                  X   X
PatientPrimaryLanguageCodeSequence                          X   X
PatientPrimaryLanguageModifierCodeSequence                  X   X
ResponsiblePerson                                           X   X
ResponsibleOrganization                                     X   X
ReferencedPatientSequence                                   X   X
ReferencedPatientAliasSequence                              X   X
ReferencedPatientPhotoSequence                              X   X
PatientInstitutionResidence                                 X   X
ConfidentialityConstraintOnPatientDataDescription           X   X

# --- Patient medical and clinical free text ---
AdditionalPatientHistory                                    X   X
PatientComments                                             X   X
MedicalAlerts                                               X   X
Allergies                                                   X   X
SmokingStatus                                               X   X
PregnancyStatus                                             X   X
LastMenstrualDate                                           X   X
PatientState                                                X   X
SpecialNeeds                                                X   X
PreMedication                                               X   X
PatientTransportArrangements                                X   X

# --- Visit and admission ---
AdmissionID                                                 X   X
IssuerOfAdmissionID                                         X   X
IssuerOfAdmissionIDSequence                                 X   X
AdmittingDate                                               X   X
AdmittingTime                                               X   X
AdmittingDiagnosesDescription                               X   X
AdmittingDiagnosesCodeSequence                              X   X
DischargeDate                                               X   X
DischargeTime                                               X   X
DischargeDiagnosisDescription                               X   X
ScheduledAdmissionDate                                      X   X
ScheduledAdmissionTime                                      X   X
ScheduledDischargeDate                                      X   X
ScheduledDischargeTime                                      X   X
ScheduledPatientInstitutionResidence                        X   X
ServiceEpisodeID                                            X   X
ServiceEpisodeDescription                                   X   X
IssuerOfServiceEpisodeID                                    X   X
IssuerOfServiceEpisodeIDSequence                            X   X
CurrentPatientLocation                                      X   X
VisitComments                                               X   X

# --- Study, series and instance identification ---
StudyInstanceUID                                            U   U
SeriesInstanceUID                                           U   U
SOPInstanceUID                                              U   U
MediaStorageSOPInstanceUID                                  U   U
ReferencedSOPInstanceUID                                    U   U
ReferencedSOPInstanceUIDInFile                              U   U
FrameOfReferenceUID                                         U   U
SynchronizationFrameOfReferenceUID                          U   U
ReferencedFrameOfReferenceUID                               U   U
RelatedFrameOfReferenceUID                                  U   U
SourceFrameOfReferenceUID                                   U   U
InstanceCreatorUID                                          U   U
IrradiationEventUID                                         U   U
ConcatenationUID                                            U   U
DimensionOrganizationUID                                    U   U
AcquisitionUID                                              U   U
PyramidUID                                                  U   U
DeviceUID                                                   U   U
ManufacturerDeviceClassUID                                  U   U
FiducialUID                                                 U   U
UID                                                         U   U
ObservationUID                                              U   U
ObservationSubjectUIDTrial                                  U   U
ReferencedObservationUIDTrial                               U   U
PaletteColorLookupTableUID                                  U   U
LargePaletteColorLookupTableUID                             U   U
StorageMediaFileSetUID                                      U   U
TemplateExtensionCreatorUID                                 U   U
TemplateExtensionOrganizationUID                            U   U
TransactionUID                                              U   U
ReferencedGeneralPurposeScheduledProcedureStepTransactionUID U  U
TrackingUID                                                 U   U
TargetUID                                                   U   U
SpecimenUID                                                 U   U
MultiplexGroupUID                                           U   U
FailedSOPInstanceUIDList                                    U   U
DigitalSignatureUID                                         U   U
PresentationDisplayCollectionUID                            U   U
PresentationSequenceCollectionUID                           U   U
DoseReferenceUID                                            U   U
ReferencedDoseReferenceUID                                  U   U
TreatmentSessionUID                                         U   U
PatientSetupUID                                             U   U
ConceptualVolumeUID                                         U   U
SourceConceptualVolumeUID                                   U   U
ConstituentConceptualVolumeUID                              U   U
ReferencedConceptualVolumeUID                               U   U
ReferencedImageSequence                                     U   X/Z/U*
SourceImageSequence                                         U   X/Z/U*
ReferencedStudySequence                                     Z   X/Z
ReferencedPerformedProcedureStepSequence                    X   X/Z/D
StudyID                                                     P   Z
AccessionNumber                                             P   Z
StudyIDIssuer                                               X   X
IssuerOfAccessionNumberSequence                             X   -
OrderPlacerIdentifierSequence                               X   -
OrderFillerIdentifierSequence                               X   -
StudyDescription                                            X   X
SeriesDescription                                           X   X
ProtocolName                                                X   X/D
StudyComments                                               X   X

# --- Registry UIDs and codes that are kept ---
SOPClassUID                                                 K   -
MediaStorageSOPClassUID                                     K   -
ReferencedSOPClassUID                                       K   -
ReferencedSOPClassUIDInFile                                 K   -
ReferencedTransferSyntaxUIDInFile                           K   -
TransferSyntaxUID                                           K   -
SOPClassesInStudy                                           K   -
RelatedGeneralSOPClassUID                                   K   -
OriginalSpecializedSOPClassUID                              K   -
CodingSchemeUID                                             K   -
PatientIdentityRemoved                                      K   -
DeidentificationMethod                                      K   -
DeidentificationMethodCodeSequence                          K   -
LongitudinalTemporalInformationModified                     K   -
BurnedInAnnotation                                          K   -
RecognizableVisualFeatures                                  K   -

# --- Dates and times ---
StudyDate                                                   Z   Z
StudyTime                                                   Z   Z
SeriesDate                                                  X   X/D
SeriesTime                                                  X   X/D
AcquisitionDate                                             Z   X/Z
AcquisitionTime                                             Z   X/Z
AcquisitionDateTime                                         D   X/Z/D
ContentDate                                                 D   Z/D
ContentTime                                                 D   Z/D
InstanceCreationDate                                        X   X/D
InstanceCreationTime                                        X   X/Z/D
InstanceCoercionDateTime                                    X   X
OverlayDate                                                 X   X
OverlayTime                                                 X   X
CurveDate                                                   X   X
CurveTime                                                   X   X
TimezoneOffsetFromUTC                                       X   X
DateOfSecondaryCapture                                      X   X
TimeOfSecondaryCapture                                      X   X
FrameAcquisitionDateTime                                    D   D
FrameReferenceDateTime                                      D   D
StartAcquisitionDateTime                                    X   X/D
EndAcquisitionDateTime                                      X   X/D
DecayCorrectionDateTime                                     D   D
ExclusionStartDateTime                                      D   D
FunctionalSyncPulse                                         D   D
ContrastBolusStartTime                                      X   X
ContrastBolusStopTime                                       X   X
InterventionDrugStartTime                                   X   X
InterventionDrugStopTime                                    X   X
RadiopharmaceuticalStartTime                                X   X
RadiopharmaceuticalStopTime                                 X   X
RadiopharmaceuticalStartDateTime                            X   X
RadiopharmaceuticalStopDateTime                             X   X
SubstanceAdministrationDateTime                             X   X
StudyArrivalDate                                            X   X
StudyArrivalTime                                            X   X
StudyCompletionDate                                         X   X
StudyCompletionTime                                         X   X
StudyReadDate                                               X   X
StudyReadTime                                               X   X
StudyVerifiedDate                                           X   X
StudyVerifiedTime                                           X   X
ScheduledStudyStartDate                                     X   X
ScheduledStudyStartTime                                     X   X
ScheduledStudyStopDate                                      X   X
ScheduledStudyStopTime                                      X   X
ModifiedImageDate                                           X   X
ModifiedImageTime                                           X   X
PresentationCreationDate                                    X   X
PresentationCreationTime                                    X   X
HangingProtocolCreationDateTime                             D   D
CreationDate                                                X   X
CreationTime                                                X   X
ExpectedCompletionDateTime                                  X   X
ProcedureStepCancellationDateTime                           X   X
ProductExpirationDateTime                                   X   X
ApprovalStatusDateTime                                      X   X
AssertionDateTime                                           D   D
AssertionExpirationDateTime                                 X   X
EffectiveDateTime                                           D   D
InformationIssueDateTime                                    D   D
ImpedanceMeasurementDateTime                                D   D
InstructionPerformedDateTime                                D   Z/D
SOPAuthorizationDateTime                                    X   X
ContributionDateTime                                        X   X
CalibrationDateTime                                         Z   Z
CalibrationDate                                             X   X
CalibrationTime                                             X   X
DateOfInstallation                                          X   X
DateOfManufacture                                           X   X
DateOfLastCalibration                                       X   X
TimeOfLastCalibration                                       X   X
DateTimeOfLastCalibration                                   X   X
DateOfLastDetectorCalibration                               X   X/D
TimeOfLastDetectorCalibration                               X   X/D

# --- Physicians, operators and other persons ---
ReferringPhysicianName                                      Z   Z
ReferringPhysicianAddress                                   X   X
ReferringPhysicianTelephoneNumbers                          X   X
ReferringPhysicianIdentificationSequence                    X   X
ConsultingPhysicianName                                     Z   Z
ConsultingPhysicianIdentificationSequence                   X   X
PhysiciansOfRecord                                          X   X
PhysiciansOfRecordIdentificationSequence                    X   X
PerformingPhysicianName                                     X   X
PerformingPhysicianIdentificationSequence                   X   X
NameOfPhysiciansReadingStudy                                X   X
PhysiciansReadingStudyIdentificationSequence                X   X
RequestingPhysician                                         X   X
RequestingService                                           X   X
OperatorsName                                               X   X/Z/D
OperatorIdentificationSequence                              X   X/D
ScheduledPerformingPhysicianName                            X   X
ScheduledPerformingPhysicianIdentificationSequence          X   X
NamesOfIntendedRecipientsOfResults                          X   X
IntendedRecipientsOfResultsIdentificationSequence           X   X
PersonName                                                  D   D
PersonIdentificationCodeSequence                            X   D
PersonAddress                                               X   X
PersonTelephoneNumbers                                      X   X
PersonTelecomInformation                                    X   X
ContentCreatorName                                          D   Z/D
ContentCreatorIdentificationCodeSequence                    X   X
HumanPerformerName                                          X   X
HumanPerformerOrganization                                  X   X
ActualHumanPerformersSequence                               X   X
ScheduledHumanPerformersSequence                            X   X
OrderEnteredBy                                              X   X
OrderEntererLocation                                        X   X
OrderCallbackPhoneNumber                                    X   X
OrderCallbackTelecomInformation                             X   X
CameraOwnerName                                             X   X
ReviewerName                                                Z   X/Z
VerifyingObserverSequence                                   D   D
VerifyingObserverName                                       D   D
VerifyingObserverIdentificationCodeSequence                 Z   Z
VerifyingOrganization                                       D   D
VerificationDateTime                                        D   D
AuthorObserverSequence                                      X   X
ParticipantSequence                                         X   X
ParticipationDateTime                                       Z   Z
CustodialOrganizationSequence                               X   X
Originator                                                  X   X

# --- Institution, station and equipment ---
InstitutionName                                             X   X/Z/D
InstitutionAddress                                          X   X
InstitutionCodeSequence                                     X   X/Z/D
InstitutionalDepartmentName                                 X   X
InstitutionalDepartmentTypeCodeSequence                     X   X
StationName                                                 X   X/Z/D
StationAETitle                                              X   X
RetrieveAETitle                                             X   X
NetworkID                                                   X   X
DeviceSerialNumber                                          D   X/Z/D
DeviceDescription                                           X   X
LongDeviceDescription                                       X   X
DeviceLabel                                                 D   D
UniqueDeviceIdentifier                                      X   X
UDISequence                                                 X   X
ManufacturerDeviceIdentifier                                Z   Z
DeviceAlternateIdentifier                                   Z   Z
DetectorID                                                  X   X/D
GantryID                                                    X   X
GeneratorID                                                 X   X
PlateID                                                     X   X
CassetteID                                                  X   X
XRayDetectorID                                              D   D
XRayDetectorLabel                                           X   X
XRaySourceID                                                D   D
SourceIdentifier                                            D   D
TransducerIdentificationSequence                            X   X
ModifyingDeviceID                                           X   X
LensMake                                                    X   X
LensModel                                                   X   X
LensSerialNumber                                            X   X
LensSpecification                                           X   X
MakerNote                                                   X   X
AcquisitionDeviceProcessingDescription                      X   X/D
DestinationAE                                               D   D
ReceivingAE                                                 X   X
RequestingAE                                                X   X
ModifyingSystem                                             D   D
SourceOfPreviousValues                                      Z   Z
GPSVersionID                                                X   X
GPSLatitudeRef                                              X   X
GPSLatitude                                                 X   X
GPSLongitudeRef                                             X   X
GPSLongitude                                                X   X
GPSAltitudeRef                                              X   X
GPSAltitude                                                 X   X
GPSTimeStamp                                                X   X
GPSSatellites                                               X   X
GPSStatus                                                   X   X
GPSMeasureMode                                              X   X
GPSDOP                                                      X   X
GPSSpeedRef                                                 X   X
GPSSpeed                                                    X   X
GPSTrackRef                                                 X   X
GPSTrack                                                    X   X
GPSImgDirectionRef                                          X   X
GPSImgDirection                                             X   X
GPSMapDatum                                                 X   X
GPSDestLatitudeRef                                          X   X
GPSDestLatitude                                             X   X
GPSDestLongitudeRef                                         X   X
GPSDestLongitude                                            X   X
GPSDestBearingRef                                           X   X
GPSDestBearing                                              X   X
GPSDestDistanceRef                                          X   X
GPSDestDistance                                             X   X
GPSProcessingMethod                                         X   X
GPSAreaInformation                                          X   X
GPSDateStamp                                                X   X
GPSDifferential                                             X   X

# --- Requests, orders and procedure steps ---
RequestAttributesSequence                                   X   X
RequestedProcedureID                                        X   X
RequestedProcedureDescription                               Z   X/Z
RequestedProcedureComments                                  X   X
RequestedProcedureLocation                                  X   X
ReasonForTheRequestedProcedure                              X   X
ReasonForRequestedProcedureCodeSequence                     X   X
RequestedContrastAgent                                      X   X
RequestedSeriesDescription                                  X   X
ReasonForStudy                                              X   X
ReasonForVisit                                              X   X
ReasonForVisitCodeSequence                                  X   X
ReasonForTheImagingServiceRequest                           X   X
ImagingServiceRequestComments                               X   X
IssueDateOfImagingServiceRequest                            X   X
IssueTimeOfImagingServiceRequest                            X   X
PlacerOrderNumberImagingServiceRequest                      Z   Z
FillerOrderNumberImagingServiceRequest                      Z   Z
ScheduledProcedureStepID                                    X   X
ScheduledProcedureStepDescription                           X   X
ScheduledProcedureStepLocation                              X   X
ScheduledProcedureStepStartDate                             X   X
ScheduledProcedureStepStartTime                             X   X
ScheduledProcedureStepEndDate                               X   X
ScheduledProcedureStepEndTime                               X   X
ScheduledProcedureStepStartDateTime                         X   X
ScheduledProcedureStepExpirationDateTime                    X   X
ScheduledProcedureStepModificationDateTime                  X   X
ScheduledStationAETitle                                     X   X
ScheduledStationName                                        X   X
ScheduledStationNameCodeSequence                            X   X
ScheduledStationGeographicLocationCodeSequence              X   X
ScheduledStudyLocation                                      X   X
ScheduledStudyLocationAETitle                               X   X
PerformedProcedureStepID                                    X   X
PerformedProcedureStepDescription                           X   X
PerformedProcedureStepStartDate                             X   X
PerformedProcedureStepStartTime                             X   X
PerformedProcedureStepEndDate                               X   X
PerformedProcedureStepEndTime                               X   X
PerformedProcedureStepStartDateTime                         X   X
PerformedProcedureStepEndDateTime                           X   X
CommentsOnThePerformedProcedureStep                         X   X
PerformedStationAETitle                                     X   X
PerformedStationName                                        X   X
PerformedStationNameCodeSequence                            X   X
PerformedStationGeographicLocationCodeSequence              X   X
PerformedLocation                                           X   X

# --- Descriptions, comments and other free text ---
ImageComments                                               X   X
AcquisitionComments                                         X   X
FrameComments                                               X   X
ImagePresentationComments                                   X   X
IdentifyingComments                                         X   X
DerivationDescription                                       X   X
ContrastBolusAgent                                          D   Z/D
CommentsOnRadiationDose                                     X   X
AcquisitionProtocolDescription                              X   X
RespiratoryMotionCompensationTechniqueDescription           X   X
MultienergyAcquisitionDescription                           X   X
DecompositionDescription                                    X   X
ContributionDescription                                     X   X
ModifiedImageDescription                                    X   X
AnnotationGroupLabel                                        D   D
AnnotationGroupDescription                                  X   X
PyramidLabel                                                X   X
PyramidDescription                                          X   X
AcquisitionFieldOfViewLabel                                 D   D
AcquisitionContextSequence                                  Z   X/Z
TextComments                                                X   X
TextString                                                  X   X
Arbitrary                                                   X   X
IconImageSequence                                           X   X
GraphicAnnotationSequence                                   X   D
ContentSequence                                             X   D
Date                                                        D   D
Time                                                        D   D
DateTime                                                    D   D
ReferencedDateTime                                          D   D
ObservationDateTime                                         D   X/D
ObservationStartDateTime                                    X   X
ContextGroupVersion                                         D   D
ContextGroupLocalVersion                                    D   D
TemplateVersion                                             X   X
TemplateLocalVersion                                        X   X
TopicTitle                                                  X   X
TopicSubject                                                X   X
TopicAuthor                                                 X   X
TopicKeywords                                               X   X
HL7DocumentEffectiveTime                                    X   X
EncapsulatedDocument                                        D   D
LabelText                                                   Z   X/Z
BarcodeValue                                                Z   X/Z

# --- Results and interpretation (retired) ---
ResultsID                                                   X   X
ResultsIDIssuer                                             X   X
ResultsComments                                             X   X
ResultsDistributionListSequence                             X   X
DistributionName                                            X   X
DistributionAddress                                         X   X
Impressions                                                 X   X
InterpretationID                                            X   X
InterpretationIDIssuer                                      X   X
InterpretationText                                          X   X
InterpretationAuthor                                        X   X
InterpretationRecorder                                      X   X
InterpretationRecordedDate                                  X   X
InterpretationRecordedTime                                  X   X
InterpretationTranscriber                                   X   X
InterpretationTranscriptionDate                             X   X
InterpretationTranscriptionTime                             X   X
InterpretationApproverSequence                              X   X
InterpretationApprovalDate                                  X   X
InterpretationApprovalTime                                  X   X
InterpretationDiagnosisDescription                          X   X
PhysicianApprovingInterpretation                            X   X

# --- Specimens and slides ---
SpecimenIdentifier                                          P   D
ContainerIdentifier                                         P   D
SpecimenAccessionNumber                                     X   X
SpecimenShortDescription                                    X   X
SpecimenDetailedDescription                                 X   X
SpecimenPreparationSequence                                 Z   Z
IssuerOfTheSpecimenIdentifierSequence                       Z   Z
IssuerOfTheContainerIdentifierSequence                      Z   Z
ContainerDescription                                        X   X
ContainerComponentID                                        X   X
SlideIdentifier                                             X   X

# --- Clinical trials ---
ClinicalTrialSponsorName                                    D   D
ClinicalTrialProtocolID                                     D   D
ClinicalTrialProtocolName                                   Z   Z
ClinicalTrialSiteID                                         Z   Z
ClinicalTrialSiteName                                       Z   Z
ClinicalTrialSubjectID                                      P   D
ClinicalTrialSubjectReadingID                               P   D
ClinicalTrialTimePointID                                    Z   Z
ClinicalTrialTimePointDescription                           X   X
ClinicalTrialCoordinatingCenterName                         Z   Z
ClinicalTrialProtocolEthicsCommitteeName                    D   D
ClinicalTrialProtocolEthicsCommitteeApprovalNumber          X   X
ClinicalTrialSeriesID                                       X   X
ClinicalTrialSeriesDescription                              X   X
IssuerOfClinicalTrialProtocolID                             X   X
IssuerOfClinicalTrialSiteID                                 X   X
IssuerOfClinicalTrialSubjectID                              X   X
IssuerOfClinicalTrialSubjectReadingID                       X   X
IssuerOfClinicalTrialTimePointID                            X   X
IssuerOfClinicalTrialSeriesID                               X   X
OtherClinicalTrialProtocolIDsSequence                       X   X
EthicsCommitteeApprovalEffectivenessStartDate               X   X
EthicsCommitteeApprovalEffectivenessEndDate                 X   X

# --- Radiotherapy ---
RTPlanLabel                                                 D   D
RTPlanName                                                  X   X
RTPlanDescription                                           X   X
RTPlanDate                                                  D   X/D
RTPlanTime                                                  D   X/D
StructureSetLabel                                           D   D
StructureSetName                                            X   X
StructureSetDescription                                     X   X
StructureSetDate                                            Z   Z
StructureSetTime                                            Z   Z
ROIName                                                     Z   Z
ROIDescription                                              X   X
ROIGenerationDescription                                    X   X
ROIObservationLabel                                         X   X
ROIObservationDescription                                   X   X
ROIDateTime                                                 X   X
ROIObservationDateTime                                      X   X
ROIInterpreter                                              Z   Z
ROIInterpreterSequence                                      X   X
ROICreatorSequence                                          X   X
BeamDescription                                             X   X
BolusDescription                                            X   X
CompensatorDescription                                      X   X
DoseReferenceDescription                                    X   X
FractionGroupDescription                                    X   X
FixationDeviceDescription                                   X   X
ShieldingDeviceDescription                                  X   X
SetupTechniqueDescription                                   X   X
PrescriptionDescription                                     X   X
TreatmentSites                                              X   X
TreatmentMachineName                                        Z   X/Z
SourceSerialNumber                                          Z   X/Z
SourceManufacturer                                          X   X
SourceStrengthReferenceDate                                 D   D
SourceStrengthReferenceTime                                 D   D
TreatmentControlPointDate                                   D   D
TreatmentControlPointTime                                   D   D
TreatmentDate                                               D   X/D
TreatmentTime                                               D   X/D
FirstTreatmentDate                                          D   X/D
MostRecentTreatmentDate                                     D   X/D
SafePositionExitDate                                        D   D
SafePositionExitTime                                        D   D
SafePositionReturnDate                                      D   D
SafePositionReturnTime                                      D   D
ReviewDate                                                  Z   Z
ReviewTime                                                  Z   Z

# --- Digital signatures, audit trail and padding ---
DigitalSignaturesSequence                                   X   X
MAC                                                         X   X
ReferencedDigitalSignatureSequence                          X   X
ReferencedSOPInstanceMACSequence                            X   X
CertificateOfSigner                                         D   D
CertifiedTimestamp                                          X   X
DigitalSignatureDateTime                                    D   D
OriginalAttributesSequence                                  X   X
ModifiedAttributesSequence                                  X   X
NonconformingModifiedAttributesSequence                     X   X
NonconformingDataElementValue                               X   X
AttributeModificationDateTime                               D   D
ReasonForTheAttributeModification                           D   D
InstanceOriginStatus                                        X   X
DataSetTrailingPadding                                      X   X
"""

#: Codes of PS3.15 Table E.1-1 that may appear in the third column (``-``: not listed).
PROFILE_CODES = frozenset({"X", "Z", "D", "U", "K", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*", "-"})


def _parse(text: str) -> tuple[dict[str, Action], dict[str, str]]:
    actions: dict[str, Action] = {}
    codes: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        keyword, action, code = line.split()
        if keyword in actions:
            raise ValueError(f"de-identification table line {number}: duplicate {keyword}")
        if code not in PROFILE_CODES:
            raise ValueError(f"de-identification table line {number}: bad code {code!r}")
        actions[keyword] = Action(action)
        codes[keyword] = code
    return actions, codes


_ACTIONS, _CODES = _parse(_TABLE)

#: Attribute keyword -> the action medm3 applies (read-only).
BASIC_PROFILE: MappingProxyType[str, Action] = MappingProxyType(_ACTIONS)

#: Attribute keyword -> the action code of PS3.15 Table E.1-1 (``-``: not in the table).
PROFILE_CODE: MappingProxyType[str, str] = MappingProxyType(_CODES)

#: The DICOM registry root: UIDs under it name SOP classes, transfer syntaxes and the
#: like, never a patient or an instance, so they are kept.
DICOM_UID_ROOT = "1.2.840.10008."


def action_for_keyword(keyword: str) -> Action | None:
    """Return the table action of an attribute keyword, or None when it is not listed.

    Args:
        keyword: A DICOM attribute keyword such as ``"PatientName"``.

    Returns:
        The :class:`Action`, or None for an attribute the table does not list.
    """
    return _ACTIONS.get(keyword)
