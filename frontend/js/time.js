// "2 minutes ago" for recent messages, a date for older ones.

const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
const absolute = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

const STEPS = [
  [60, "second", 1],
  [3600, "minute", 60],
  [86400, "hour", 3600],
  [7 * 86400, "day", 86400],
];

export function relativeTime(date, now = Date.now()) {
  const seconds = Math.round((date.getTime() - now) / 1000);
  const distance = Math.abs(seconds);
  if (distance < 10) return "just now";
  for (const [limit, unit, size] of STEPS) {
    if (distance < limit) return relative.format(Math.round(seconds / size), unit);
  }
  return absolute.format(date);
}

export function fullTime(date) {
  return absolute.format(date);
}
