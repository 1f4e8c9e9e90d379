// The health model's API (issue 14), for the daemon, the status line and the CLI to call: a series of what
// happened (record events into it, save and load it), and one pure function that judges it.
export { HealthSeries, healthEventSchema, CLOCK_BACK_MS, COUNT_FIELDS, type Counts, type CountField, type HealthEvent, type SpareGauge, type BadBlockOrigin, type SeriesData } from './series.js';
export { HealthRecordError, healthFilePath, loadHealth, saveHealth, encodeHealthFile, decodeHealthFile } from './series-file.js';
export { assessHealth, actionFor, HEALTH_STATES, SCORE_BANDS, SCORE_WEIGHTS, type HealthAssessment, type HealthReason, type HealthSignal, type HealthState } from './assess.js';
export { forecastOf, type Forecast } from './forecast.js';
export {
  DEFAULT_HEALTH_SETTINGS,
  HEALTH_CLI_KEY_NAMES,
  HEALTH_SETTING_KEYS,
  HEALTH_SETTING_LIMITS,
  healthOrderProblem,
  healthSettingsSchema,
  parseHealthSetting,
  resolveHealthSettings,
  type HealthSettingKey,
  type HealthSettings,
  type PartialHealthSettings,
} from './settings.js';
