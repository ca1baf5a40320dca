import { Pipe, PipeTransform } from '@angular/core';
import type { Timestamp } from '@bufbuild/protobuf/wkt';

import { formatMoney } from '@shared/money';
import { formatTime } from '@shared/time';

/** `{{ amount | money: currency }}`: minor units shown in the currency's own format. */
@Pipe({ name: 'money' })
export class MoneyPipe implements PipeTransform {
  transform(amount: bigint | number | undefined, currency: string): string {
    return amount === undefined ? '' : formatMoney(amount, currency);
  }
}

/** `{{ timestamp | time }}`: a local date and time. */
@Pipe({ name: 'time' })
export class TimePipe implements PipeTransform {
  transform(timestamp: Timestamp | undefined): string {
    return formatTime(timestamp);
  }
}
