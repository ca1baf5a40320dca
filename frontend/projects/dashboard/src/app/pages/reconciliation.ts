import { Component, OnInit, inject, signal } from '@angular/core';
import { FormsModule } from '@angular/forms';
import { MatButtonModule } from '@angular/material/button';
import { MatFormFieldModule } from '@angular/material/form-field';
import { MatInputModule } from '@angular/material/input';
import { timestampFromDate } from '@bufbuild/protobuf/wkt';

import { AdminService, type ReconciliationRun } from '@gen/paymesh/admin/v1/admin_pb';
import { MoneyPipe, TimePipe } from '@shared/format';
import { Session, describeError } from '../session';

/** "YYYY-MM-DDTHH:MM" in local time, as a datetime-local input wants it. */
function localInput(date: Date): string {
  const shifted = new Date(date.getTime() - date.getTimezoneOffset() * 60_000);
  return shifted.toISOString().slice(0, 16);
}

/** Runs reconciliation for a range and shows totals and mismatches, and past runs. */
@Component({
  selector: 'pm-reconciliation-page',
  imports: [FormsModule, MatButtonModule, MatFormFieldModule, MatInputModule, MoneyPipe, TimePipe],
  templateUrl: './reconciliation.html',
  styles: `
    table { width: 100%; border-collapse: collapse; }
    th, td { text-align: left; padding: 0.45rem 0.5rem; border-bottom: 1px solid #e6e8ee; font-size: 0.9rem; }
    th { font-weight: 500; color: #545b69; }
    .num { text-align: right; font-variant-numeric: tabular-nums; }
    .clean { color: #14532d; font-weight: 500; }
    .runs button { text-align: left; }
  `,
})
export class ReconciliationPage implements OnInit {
  readonly session = inject(Session);
  readonly run = signal<ReconciliationRun | null>(null);
  readonly runs = signal<ReconciliationRun[]>([]);
  readonly error = signal('');
  readonly busy = signal(false);
  start = localInput(new Date(Date.now() - 86_400_000));
  end = localInput(new Date(Date.now() + 60_000));

  ngOnInit(): void {
    void this.loadRuns();
  }

  async loadRuns(): Promise<void> {
    try {
      const response = await this.session.api(AdminService.method.listReconciliations, { pageSize: 20 });
      this.runs.set(response.runs);
    } catch (error) {
      this.error.set(describeError(error));
    }
  }

  async reconcile(): Promise<void> {
    const start = new Date(this.start);
    const end = new Date(this.end);
    if (Number.isNaN(start.getTime()) || Number.isNaN(end.getTime()) || start >= end) {
      this.error.set('Choose a start before the end.');
      return;
    }
    if (this.busy()) return;
    this.busy.set(true);
    this.error.set('');
    try {
      this.run.set(
        await this.session.api(AdminService.method.reconcile, {
          startTime: timestampFromDate(start),
          endTime: timestampFromDate(end),
        }),
      );
      await this.loadRuns();
    } catch (error) {
      this.error.set(describeError(error));
    } finally {
      this.busy.set(false);
    }
  }
}
