/** Timestamps from the API (google.protobuf.Timestamp) for display. */
import { timestampDate, timestampFromDate, type Timestamp } from '@bufbuild/protobuf/wkt';

export { timestampFromDate };

/** A timestamp as a Date, or null when unset. */
export function toDate(timestamp: Timestamp | undefined): Date | null {
  return timestamp ? timestampDate(timestamp) : null;
}

/** A short local date and time, e.g. "26 Nov 2026, 06:15:02"; empty when unset. */
export function formatTime(timestamp: Timestamp | undefined): string {
  const date = toDate(timestamp);
  return date
    ? date.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'medium' })
    : '';
}
